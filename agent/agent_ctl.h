/* The agent's control socket (the "button"): a Unix socket taking one command per connection,
 * "press" (start phoning home; answers "ok ...") or "status" (one line per camera), and the
 * client side used by `camrelay-agent --control-socket P --press`. */
#ifndef AGT_AGENT_CTL_H
#define AGT_AGENT_CTL_H

#include <stdio.h>

struct agt_agent;

#define AGT_CTL_IO_MS 2000 /* a client has this long to send its line and take the answer */

/* Listens on path (a stale socket file is replaced), mode 0660. Returns fd or -errno. */
int agt_ctl_listen(const char *path);

/* Accepts one client on listen_fd and serves it (agt_ctl_serve). Main thread. */
void agt_ctl_accept(struct agt_agent *a, int listen_fd);

/* Reads one command line from a connected socket fd, writes the answer. Borrows fd. Returns 0
 * after a known command, -EINVAL for an unknown one, other -errno on I/O errors. Any thread. */
int agt_ctl_serve(struct agt_agent *a, int fd);

/* Client: sends cmd ("press") to the agent at path and copies the answer to out. Returns the
 * exit status: 0 when the agent answered "ok", 1 for any other answer, 2 when the agent
 * cannot be reached (message on stderr). */
int agt_ctl_client(const char *path, const char *cmd, FILE *out);

#endif
