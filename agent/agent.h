/* camrelay-agent: one real camera, or N simulated ones, phoning home to a relay.
 *
 * Threads: the caller's (signals, control socket); 1-4 loop threads driving every camera's
 * control tunnel (tunnel.h); up to 16 dialer threads for TCP+TLS connects; one thread per
 * open stream (stream.h); the simulator's thread with --simulate. Every thread but the
 * caller's runs on a 256 KiB stack. The process must ignore SIGPIPE (TLS writes use write(2))
 * and should block SIGINT/SIGTERM in every thread but the one that waits for them. */
#ifndef AGT_AGENT_H
#define AGT_AGENT_H

#include <stddef.h>

#include "agent/agent_config.h"

#define AGT_VERSION "camrelay-agent/0.1"
#define AGT_THREAD_STACK (256 * 1024)
#define AGT_STOP_WAIT_MS 3000 /* how long stop waits for connects and streams to finish */

struct agt_agent;

/* Builds the agent from a checked configuration (borrowed until agt_agent_destroy): TLS
 * context from --ca, the simulator with --simulate, the cameras with their cached relays.
 * Starts no thread. Returns 0 and an owned agent, or -errno with a message in err (the
 * program exits 2: unusable CA, clip, ...). Main thread. */
int agt_agent_create(const struct agt_config *cfg, struct agt_agent **out, char *err,
                     size_t errlen);

/* Starts the threads; with --connect presses the button. Returns 0 or -errno. Main thread. */
int agt_agent_start(struct agt_agent *a);

/* The one-click button: every camera starts phoning home. Returns 1 if this press started
 * them, 0 if they already were. Any thread. */
int agt_agent_press(struct agt_agent *a);

/* Number of cameras (1, or --simulate N). */
unsigned agt_agent_n_cameras(const struct agt_agent *a);

/* One line per camera: "<serial> <state> <relay|-> <last error|->\n", state one of idle,
 * dispatching, waiting-registration, connecting, online. Returns an owned string (free), its
 * length in *len. Any thread. */
char *agt_agent_status(struct agt_agent *a, size_t *len);

/* Stops every thread: tunnels are closed (close_notify), streams cut, connects in progress
 * abandoned. Waits up to AGT_STOP_WAIT_MS for connects and streams to end. Returns 0, or
 * -ETIMEDOUT if some are still running (agt_agent_destroy then leaves the memory they use to
 * the process exit). Main thread, once. */
int agt_agent_stop(struct agt_agent *a);

/* Frees the agent after agt_agent_stop (or after a failed start). NULL is a no-op. */
void agt_agent_destroy(struct agt_agent *a);

/* Internal (agent modules): runs fn(arg) on a detached small-stack thread counted in the
 * agent's live threads, which agt_agent_stop waits for. Returns 0 or -errno. Any thread. */
int agt__spawn(struct agt_agent *a, void *(*fn)(void *), void *arg);

#endif
