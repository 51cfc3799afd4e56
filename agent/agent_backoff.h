/* Reconnect delays for the agent: exponential backoff (1 s doubling to 60 s) with full jitter,
 * so a thousand cameras that lost the same relay do not come back in one burst. */
#ifndef AGT_AGENT_BACKOFF_H
#define AGT_AGENT_BACKOFF_H

#include <stdint.h>

#define AGT_BACKOFF_BASE_MS 1000u
#define AGT_BACKOFF_MAX_MS 60000u

/* All-zero is the initial state (next ceiling 1 s). */
struct agt_backoff {
    unsigned attempt;
};

/* The ceiling for a given attempt number: 1 s, 2 s, 4 s, ... capped at 60 s. */
uint32_t agt_backoff_ceiling_ms(unsigned attempt);

/* Returns the delay before the next attempt, uniform in [0, ceiling] (full jitter), and
 * advances to the next ceiling. Any thread (each caller owns its struct). */
uint32_t agt_backoff_next_ms(struct agt_backoff *b);

/* Back to the 1 s ceiling (after a success). */
void agt_backoff_reset(struct agt_backoff *b);

/* base + uniform [0, spread]: for server-given retry times (Refusal.retry_after_ms). */
uint32_t agt_jitter_ms(uint32_t base, uint32_t spread);

#endif
