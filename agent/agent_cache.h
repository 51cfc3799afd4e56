/* The agent's relay cache: <state-dir>/<serial>.relay remembers where the dispatcher sent the
 * camera, so a restart goes straight to the relay. Written atomically (temp file + rename);
 * a corrupt file is ignored with a warning. */
#ifndef AGT_AGENT_CACHE_H
#define AGT_AGENT_CACHE_H

#include "common/net.h"

#define AGT_MAX_RELAYS 4
#define AGT_CACHE_HEADER "# camrelay-agent relay cache v1"
#define AGT_CACHE_FILE_MAX 4096

/* Reads the cached relay addresses of serial into addrs[cap]. Returns the count (0 when there
 * is no cache or it is corrupt: the latter logs a warning naming the file), never an error.
 * serial must have passed agt_serial_check (no '/'). Any thread. */
int agt_cache_load(const char *dir, const char *serial, char (*addrs)[CR_ADDR_STRLEN],
                   unsigned cap);

/* Replaces the cache with addrs[0..n) (n >= 1): writes <serial>.relay.tmp, optionally fsyncs
 * it (durable), renames it over <serial>.relay. Returns 0 or -errno; no partial file is ever
 * visible under the final name. Any thread; one writer per serial. */
int agt_cache_store(const char *dir, const char *serial, const char (*addrs)[CR_ADDR_STRLEN],
                    unsigned n, int durable);

/* Removes the cache (the relay refused the camera). Returns 0 or -errno (-ENOENT is 0). */
int agt_cache_drop(const char *dir, const char *serial);

#endif
