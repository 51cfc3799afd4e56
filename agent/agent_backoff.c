/* Reconnect delays: exponential backoff with full jitter. */
#include "agent/agent_backoff.h"

#include "common/util.h"

uint32_t agt_backoff_ceiling_ms(unsigned attempt)
{
    /* 1000 << 6 = 64 s already exceeds the cap; stop shifting there so nothing overflows. */
    uint32_t c = AGT_BACKOFF_BASE_MS << (attempt > 6 ? 6 : attempt);
    return c > AGT_BACKOFF_MAX_MS ? AGT_BACKOFF_MAX_MS : c;
}

uint32_t agt_backoff_next_ms(struct agt_backoff *b)
{
    uint32_t c = agt_backoff_ceiling_ms(b->attempt);
    if (b->attempt < 64)
        b->attempt++;
    return cr_random_below(c + 1);
}

void agt_backoff_reset(struct agt_backoff *b)
{
    b->attempt = 0;
}

uint32_t agt_jitter_ms(uint32_t base, uint32_t spread)
{
    uint64_t v = (uint64_t)base + cr_random_below(spread == UINT32_MAX ? spread : spread + 1);
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}
