#!/usr/bin/env bash
# The network shape itself, with plain tools and no camrelay code: the site reaches central
# through the router's NAT (central sees the router's public address), and central cannot open
# a connection into the site (not even with a route to the site's network).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

[ -n "$PYTHON" ] || fail "needs python3 (listeners)"
netns_setup

# A TCP listener that logs "listening HOST PORT" and then "peer IP PORT" per connection,
# answering each with a line.
cat >"$E2E_TMP/listener.py" <<'PY'
import socket, sys
host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(16)
print("listening", host, port, flush=True)
while True:
    c, (ip, p) = s.accept()
    print("peer", ip, p, flush=True)
    try:
        c.sendall(("hello from " + tag + "\n").encode())
    finally:
        c.close()
PY

SITE_PORT=18080
CENTRAL_PORT=19090

ns_spawn "$NS_SITE" "$E2E_TMP/site-listener.log" "$PYTHON" -u "$E2E_TMP/listener.py" "$SITE_IP" "$SITE_PORT" site
ns_spawn "$NS_CENTRAL" "$E2E_TMP/central-listener.log" "$PYTHON" -u "$E2E_TMP/listener.py" "$CENTRAL_IP" "$CENTRAL_PORT" central
wait_for_log "$E2E_TMP/site-listener.log" '^listening' 10 || { show_log "$E2E_TMP/site-listener.log"; fail "site listener did not start"; }
wait_for_log "$E2E_TMP/central-listener.log" '^listening' 10 || { show_log "$E2E_TMP/central-listener.log"; fail "central listener did not start"; }

# Shape.
# (Outputs captured first: with pipefail, `cmd | grep -q` can fail on SIGPIPE.)
routes=$(ip -n "$NS_SITE" route show default)
[[ "$routes" == *"via $ROUTER_LAN_IP"* ]] || fail "site has no default route via the router"
[ "$(ip netns exec "$NS_ROUTER" sysctl -n net.ipv4.ip_forward)" = 1 ] || fail "router does not forward"
ruleset=$(ip netns exec "$NS_ROUTER" nft list ruleset)
[[ "$ruleset" == *masquerade* ]] || fail "router has no masquerade rule"
pass "namespaces, routes, forwarding and nftables rules in place"

# Positive control: the site listener is reachable inside the site (so a failure from
# central below is the NAT/firewall's doing, not a dead listener).
wait_for_port "$NS_SITE" "$SITE_IP" "$SITE_PORT" 5 || fail "site listener unreachable from inside the site"
# ...and from the router itself (its own output path is not filtered).
tcp_probe "$NS_ROUTER" "$SITE_IP" "$SITE_PORT" 3 || fail "site listener unreachable from the router"
pass "site listener reachable locally and from the router"
site_peers_before=$(grep -c '^peer' "$E2E_TMP/site-listener.log" || true)

# 1. central -> site fails: no route...
if tcp_probe "$NS_CENTRAL" "$SITE_IP" "$SITE_PORT" 3; then
    fail "central opened a connection to the site ($SITE_IP:$SITE_PORT)"
fi
# ...and nothing is forwarded from the router's public address either (no port forward).
if tcp_probe "$NS_CENTRAL" "$ROUTER_WAN_IP" "$SITE_PORT" 3; then
    fail "central reached the site through the router's public address $ROUTER_WAN_IP:$SITE_PORT"
fi
# ...and even with a route to 10.10.0.0/24 via the router, its forward policy drops it.
ip -n "$NS_CENTRAL" route add 10.10.0.0/24 via "$ROUTER_WAN_IP"
if tcp_probe "$NS_CENTRAL" "$SITE_IP" "$SITE_PORT" 3; then
    fail "central opened a connection to the site through the router's firewall"
fi
ip -n "$NS_CENTRAL" route del 10.10.0.0/24 via "$ROUTER_WAN_IP"
site_peers_after=$(grep -c '^peer' "$E2E_TMP/site-listener.log" || true)
[ "$site_peers_after" -eq "$site_peers_before" ] || { show_log "$E2E_TMP/site-listener.log"; fail "site listener saw a connection from outside"; }
pass "central cannot open a connection into the site (no route; with a route the router drops it)"

# 2. site -> central succeeds, and central sees the router's public address.
reply=$(ip netns exec "$NS_SITE" timeout 5 bash -c \
    "exec 3<>/dev/tcp/$CENTRAL_IP/$CENTRAL_PORT && IFS= read -r line <&3 && printf '%s' \"\$line\"") \
    || fail "site could not connect to central ($CENTRAL_IP:$CENTRAL_PORT)"
[ "$reply" = "hello from central" ] || fail "unexpected reply from central: '$reply'"
pass "site connects to central ($CENTRAL_IP:$CENTRAL_PORT) and gets the reply"

wait_for_log "$E2E_TMP/central-listener.log" '^peer ' 5 || fail "central listener logged no connection"
peer=$(awk '/^peer /{ print $2; exit }' "$E2E_TMP/central-listener.log")
[ "$peer" = "$ROUTER_WAN_IP" ] || { show_log "$E2E_TMP/central-listener.log"; fail "central saw source $peer, expected the router's $ROUTER_WAN_IP (masquerade)"; }
pass "central sees the connection from $peer (masqueraded), not from $SITE_IP"

# The router's conntrack-based NAT also handles many short connections.
for i in 1 2 3 4 5; do
    tcp_probe "$NS_SITE" "$CENTRAL_IP" "$CENTRAL_PORT" 3 || fail "site -> central connection $i failed"
done
for ((i = 0; i < 30; i++)); do
    [ "$(grep -c '^peer ' "$E2E_TMP/central-listener.log" || true)" -ge 6 ] && break
    sleep 0.1
done
n=$(grep -c "^peer $ROUTER_WAN_IP " "$E2E_TMP/central-listener.log" || true)
other=$(grep '^peer ' "$E2E_TMP/central-listener.log" | grep -vc "^peer $ROUTER_WAN_IP " || true)
[ "$other" -eq 0 ] || fail "central saw connections from other sources than $ROUTER_WAN_IP"
pass "repeated site -> central connections all masqueraded ($n seen)"
