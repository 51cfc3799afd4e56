/* Unit tests for agent/sim*.c over socketpairs: RTSP and HTTP handling, pacing, backpressure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "agent/sim.h"
#include "tests/agent/helpers.h"

/* Baseline 320x240 SPS without VUI timing (so the configured fps applies) and a PPS. */
static const uint8_t sps[] = {0x67, 0x42, 0xc0, 0x1e, 0xda, 0x05, 0x07, 0xe4};
static const uint8_t pps[] = {0x68, 0xeb, 0xc3, 0xcb, 0x22, 0xc0};

static char tmpdir[64];
static char small_clip[128]; /* 10 frames, GOP 5, small slices: protocol tests at 20 fps */
static char big_clip[128];   /* 20 frames, GOP 10, 60/30 KB slices: backpressure at 100 fps */
static struct agt_sim *sim;  /* serves small_clip at 20 fps */

static void put(FILE *f, const uint8_t *nal, size_t len)
{
    static const uint8_t sc[] = {0, 0, 0, 1};

    fwrite(sc, 1, 4, f);
    fwrite(nal, 1, len, f);
}

static int write_clip(const char *path, int frames, int gop, size_t idr_len, size_t p_len)
{
    uint8_t *nal = malloc(idr_len > p_len ? idr_len : p_len);
    FILE *f = fopen(path, "wb");

    if (!f || !nal)
        return -1;
    for (int i = 0; i < frames; i++) {
        size_t len = i % gop == 0 ? idr_len : p_len;
        if (i % gop == 0) {
            put(f, sps, sizeof(sps));
            put(f, pps, sizeof(pps));
        }
        nal[0] = i % gop == 0 ? 0x65 : 0x41;
        for (size_t k = 1; k < len; k++) /* first_mb_in_slice 0, never a start code */
            nal[k] = (uint8_t)(0x80 | (k * 7 + (size_t)i));
        put(f, nal, len);
    }
    free(nal);
    return fclose(f);
}

/* ---- client side: a buffered reader of RTSP replies and interleaved packets ---- */

struct conn {
    int fd;
    size_t len;
    uint8_t buf[1 << 20];
};

enum item { ITEM_EOF, ITEM_TIMEOUT, ITEM_TEXT, ITEM_PACKET };

struct packet {
    uint8_t channel;
    size_t len;
    uint8_t data[65536];
};

static struct conn *conn_new(int fd)
{
    struct conn *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    c->fd = fd;
    return c;
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c);
}

static int conn_fill(struct conn *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    if (c->len == sizeof(c->buf) || poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    if (n <= 0)
        return 0;
    c->len += (size_t)n;
    return (int)n;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Next reply (into text, NUL-terminated, head + body) or interleaved packet. */
static enum item conn_next(struct conn *c, int timeout_ms, char *text, size_t text_cap,
                           struct packet *pkt)
{
    for (;;) {
        if (c->len >= 4 && c->buf[0] == '$') {
            size_t len = (size_t)c->buf[2] << 8 | c->buf[3];
            if (c->len >= 4 + len) {
                pkt->channel = c->buf[1];
                pkt->len = len;
                memcpy(pkt->data, c->buf + 4, len);
                consume(c, 4 + len);
                return ITEM_PACKET;
            }
        } else if (c->len > 0 && c->buf[0] != '$') {
            uint8_t *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (end) {
                size_t head = (size_t)(end - c->buf) + 4, body = 0;
                char *cl = memmem(c->buf, head, "Content-Length: ", 16);
                if (cl)
                    body = strtoul(cl + 16, NULL, 10);
                if (c->len >= head + body) {
                    assert_true(head + body < text_cap);
                    memcpy(text, c->buf, head + body);
                    text[head + body] = '\0';
                    consume(c, head + body);
                    return ITEM_TEXT;
                }
            }
        }
        int n = conn_fill(c, timeout_ms);
        if (n < 0)
            return ITEM_TIMEOUT;
        if (n == 0)
            return ITEM_EOF;
    }
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Sends a request and returns its reply, skipping interleaved packets; *markers (if given)
 * counts the AUs that ended among them. */
static char *request(struct conn *c, const char *req, int *markers)
{
    static char text[16384];
    struct packet *pkt = malloc(sizeof(*pkt));

    send_str(c->fd, req);
    for (;;) {
        enum item it = conn_next(c, 3000, text, sizeof(text), pkt);
        assert_true(it == ITEM_TEXT || it == ITEM_PACKET);
        if (it == ITEM_TEXT)
            break;
        if (markers && (pkt->data[1] & 0x80))
            (*markers)++;
    }
    free(pkt);
    return text;
}

static struct conn *connect_sim(struct agt_sim *s, enum agt_sim_service svc, const char *serial)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(agt_sim_serve_fd(s, sv[1], svc, serial), 0);
    return conn_new(sv[0]);
}

static void expect_eof(struct conn *c)
{
    static char text[16384];
    struct packet *pkt = malloc(sizeof(*pkt));
    enum item it;

    while ((it = conn_next(c, 3000, text, sizeof(text), pkt)) == ITEM_PACKET)
        ;
    free(pkt);
    assert_int_equal(it, ITEM_EOF);
}

/* SETUP + PLAY; returns the Session id and the RTP-Info seq/rtptime. */
static void setup_and_play(struct conn *c, char *session, uint16_t *seq, uint32_t *rtptime)
{
    char *r = request(c, "SETUP rtsp://sim/cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
                         "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
                      NULL);
    char req[256], *p;

    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    assert_non_null(strstr(r, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc="));
    p = strstr(r, "Session: ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "Session: %16[0-9a-f];timeout=60", session), 1);
    snprintf(req, sizeof(req), "PLAY rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 4\r\nSession: %s\r\n"
                               "Range: npt=0.000-\r\n\r\n", session);
    r = request(c, req, NULL);
    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    assert_non_null(strstr(r, "CSeq: 4\r\n"));
    p = strstr(r, "RTP-Info: url=rtsp://sim/cam/trackID=0;seq=");
    assert_non_null(p);
    unsigned s, t;
    assert_int_equal(sscanf(p, "RTP-Info: url=rtsp://sim/cam/trackID=0;seq=%u;rtptime=%u", &s,
                            &t), 2);
    *seq = (uint16_t)s;
    *rtptime = t;
}

static unsigned nal_type_of(const struct packet *p)
{
    return p->data[12] & 0x1f;
}

static uint32_t rtp_ts(const struct packet *p)
{
    return (uint32_t)p->data[4] << 24 | (uint32_t)p->data[5] << 16 |
           (uint32_t)p->data[6] << 8 | p->data[7];
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_sim_rtsp_options_and_describe(void **state)
{
    struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-1");
    char *r;

    (void)state;
    r = request(c, "OPTIONS rtsp://sim/cam RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: t\r\n\r\n", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    assert_non_null(strstr(r, "CSeq: 1\r\n"));
    assert_non_null(strstr(r, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"));
    r = request(c, "DESCRIBE rtsp://sim/cam RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n",
                NULL);
    assert_non_null(strstr(r, "CSeq: 2\r\n"));
    assert_non_null(strstr(r, "Content-Base: rtsp://sim/cam/\r\n"));
    assert_non_null(strstr(r, "Content-Type: application/sdp\r\n"));
    assert_non_null(strstr(r, "m=video 0 RTP/AVP 96\r\n"));
    assert_non_null(strstr(r, "a=rtpmap:96 H264/90000\r\n"));
    assert_non_null(strstr(r, "a=fmtp:96 packetization-mode=1;profile-level-id=42C01E;"
                              "sprop-parameter-sets=Z0LAHtoFB+Q=,aOvDyyLA\r\n"));
    assert_non_null(strstr(r, "a=control:trackID=0\r\n"));
    r = request(c, "SETUP rtsp://sim/cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
                   "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n",
                NULL);
    assert_non_null(strstr(r, "RTSP/1.0 461 Unsupported Transport\r\n"));
    r = request(c, "PLAY rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 4\r\n\r\n", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 455 "));
    r = request(c, "PAUSE rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 5\r\n\r\n", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 501 Not Implemented\r\nServer: camrelay-sim\r\nCSeq: 5"));
    r = request(c, "OPTIONS * RTSP/1.0\r\nCSeq: 6\r\nRequire: funky\r\n\r\n", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 551 "));
    assert_non_null(strstr(r, "Unsupported: funky\r\n"));
    /* two pipelined requests in one write, answered in order */
    send_str(c->fd, "OPTIONS * RTSP/1.0\r\nCSeq: 7\r\n\r\n"
                    "GET_PARAMETER * RTSP/1.0\r\nCSeq: 8\r\n\r\n");
    r = request(c, "", NULL);
    assert_non_null(strstr(r, "CSeq: 7\r\n"));
    r = request(c, "", NULL);
    assert_non_null(strstr(r, "CSeq: 8\r\n"));
    conn_free(c);
}

static void test_sim_rtsp_request_one_byte_at_a_time(void **state)
{
    struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-slow");
    const char *req = "OPTIONS rtsp://sim/ RTSP/1.0\r\nCSeq: 42\r\n\r\n";

    (void)state;
    for (size_t i = 0; req[i]; i++) {
        assert_int_equal(write(c->fd, req + i, 1), 1);
        usleep(1000);
    }
    char *r = request(c, "", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    assert_non_null(strstr(r, "CSeq: 42\r\n"));
    conn_free(c);
}

static void test_sim_rtsp_garbage_gets_400_and_close(void **state)
{
    const char *bad[] = {
        "HELLO WORLD\r\n\r\n",
        "OPTIONS rtsp://sim/ RTSP/1.0\r\n\r\n",                  /* no CSeq */
        "OPTIONS rtsp://sim/ RTSP/1.0\r\nCSeq: x1\r\n\r\n",      /* bad CSeq */
        "GET / HTTP/1.1\r\nHost: x\r\nCSeq: 1\r\n\r\n",          /* wrong protocol */
        "OPTIONS rtsp://sim/ RTSP/1.0\r\nCSeq: 1\r\nBad\x01: v\r\n\r\n",
        "OPTIONS rtsp://sim/ RTSP/1.0\r\nCSeq: 1\r\n folded\r\n\r\n",
        "options rtsp://sim/ RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-bad");
        char *r = request(c, bad[i], NULL);
        assert_non_null(strstr(r, "RTSP/1.0 400 Bad Request\r\n"));
        expect_eof(c);
        conn_free(c);
    }
    struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-big");
    char *r = request(c, "SET_PARAMETER * RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 99999\r\n\r\n",
                      NULL);
    assert_non_null(strstr(r, "RTSP/1.0 413 "));
    expect_eof(c);
    conn_free(c);
}

static void test_sim_rtsp_header_overflow_closes(void **state)
{
    struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-flood");
    char *junk = malloc(9000);

    (void)state;
    memset(junk, 'A', 9000);
    memcpy(junk, "OPTIONS ", 8);
    assert_int_equal(write(c->fd, junk, 9000), 9000);
    expect_eof(c); /* closed without a reply */
    free(junk);
    conn_free(c);
}

/* Reads AUs until `frames` markers are seen; checks continuity. Returns when (mono_ms) the
 * last one was read. */
static uint64_t read_frames(struct conn *c, int frames, uint16_t *seq, uint32_t *ts,
                            int *keyframes)
{
    static char text[16384];
    struct packet *pkt = malloc(sizeof(*pkt));
    bool au_start = true;

    for (int got = 0; got < frames;) {
        enum item it = conn_next(c, 3000, text, sizeof(text), pkt);
        if (it == ITEM_TEXT)
            continue;
        assert_int_equal(it, ITEM_PACKET);
        assert_int_equal(pkt->channel, 0);
        assert_true(pkt->len > 12);
        assert_int_equal(pkt->data[0], 0x80);
        assert_int_equal(pkt->data[1] & 0x7f, 96);
        assert_int_equal((uint16_t)(pkt->data[2] << 8 | pkt->data[3]), *seq);
        (*seq)++;
        if (au_start) {
            assert_int_equal(rtp_ts(pkt), *ts);
            if (nal_type_of(pkt) == 7)
                (*keyframes)++;
        } else {
            assert_int_equal(rtp_ts(pkt), *ts); /* same timestamp within an AU */
        }
        au_start = pkt->data[1] & 0x80;
        if (au_start) {
            *ts += 4500; /* 20 fps */
            got++;
        }
    }
    free(pkt);
    return mono_ms();
}

static void test_sim_rtsp_play_streams_paced_rtp(void **state)
{
    char session[17], req[256], logpath[128], line[512];
    uint16_t seq;
    uint32_t ts;
    int keyframes = 0, saved = dup(2), skipped = 0;
    struct agt_sim_stats before, after;

    (void)state;
    snprintf(logpath, sizeof(logpath), "%s/stderr.log", tmpdir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(logfd >= 0);
    dup2(logfd, 2); /* capture the session lines */
    agt_sim_get_stats(sim, &before);
    struct conn *c = connect_sim(sim, AGT_SIM_RTSP, "cam-play");
    /* Timed from before PLAY, which the simulator's clock for this session starts after: the
     * 25th frame is due 24 x 50 ms later and may not come sooner (bar the simulator's half a
     * millisecond of slack, and rounding to ms), however late this thread reads the first. */
    uint64_t t_play = mono_ms();
    setup_and_play(c, session, &seq, &ts);
    /* 25 frames: the 10-frame clip loops twice with continuous seq and timestamps */
    uint64_t ms = read_frames(c, 25, &seq, &ts, &keyframes) - t_play;
    assert_int_equal(keyframes, 5); /* GOP 5, first AU a keyframe */
    assert_true(ms >= 24 * 50 - 1 && ms <= 24 * 50 + 250);
    /* an RTCP receiver report and a keepalive in the middle of the stream */
    static const uint8_t rr[] = {'$', 1, 0, 8, 0x80, 201, 0, 1, 0, 0, 0, 1};
    assert_int_equal(write(c->fd, rr, sizeof(rr)), (ssize_t)sizeof(rr));
    snprintf(req, sizeof(req), "GET_PARAMETER rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 5\r\n"
                               "Session: %s\r\n\r\n", session);
    char *r = request(c, req, &skipped);
    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    assert_non_null(strstr(r, "CSeq: 5\r\n"));
    snprintf(req, sizeof(req), "GET_PARAMETER rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 6\r\n"
                               "Session: 0000000000000000\r\n\r\n");
    r = request(c, req, &skipped);
    assert_non_null(strstr(r, "RTSP/1.0 454 "));
    /* count every complete AU until EOF: must equal the session's frames_sent */
    snprintf(req, sizeof(req), "TEARDOWN rtsp://sim/cam/ RTSP/1.0\r\nCSeq: 7\r\n"
                               "Session: %s\r\n\r\n", session);
    send_str(c->fd, req);
    struct packet *pkt = malloc(sizeof(*pkt));
    static char text[16384];
    enum item it;
    int markers = 25, replies = 0;
    while ((it = conn_next(c, 3000, text, sizeof(text), pkt)) != ITEM_EOF) {
        assert_true(it != ITEM_TIMEOUT);
        if (it == ITEM_TEXT)
            replies++;
        else if (pkt->data[1] & 0x80)
            markers++;
    }
    free(pkt);
    assert_int_equal(replies, 1);
    conn_free(c);
    usleep(20000);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(logfd);
    agt_sim_get_stats(sim, &after);
    assert_true(after.frames_sent - before.frames_sent >= 25);

    FILE *f = fopen(logpath, "r");
    unsigned long long sent = 0, dropped = 1, bytes = 0;
    bool play = false, ended = false;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        char *p;
        if (strstr(line, "sim: rtsp play serial=cam-play"))
            play = true;
        if ((p = strstr(line, "sim: rtsp session ended serial=cam-play ")) != NULL) {
            assert_int_equal(sscanf(p, "sim: rtsp session ended serial=cam-play frames_sent=%llu "
                                       "frames_dropped=%llu bytes=%llu", &sent, &dropped, &bytes),
                             3);
            ended = true;
        }
    }
    fclose(f);
    assert_true(play);
    assert_true(ended);
    assert_int_equal(dropped, 0);
    assert_true(bytes > 0);
    /* every AU the server counted as sent reached the client whole, and only those */
    assert_int_equal(sent, (unsigned long long)(markers + skipped));
}

/* The peer stops reading: frames are dropped whole until a keyframe, never half-sent. */
static void test_sim_rtsp_backpressure_drops_until_keyframe(void **state)
{
    struct agt_sim_config cfg = {.clip_path = big_clip, .fps = 100, .name = "bp"};
    struct agt_sim *bp;
    struct agt_sim_stats st;
    char session[17];
    uint16_t seq;
    uint32_t ts, last_ts = 0;
    static char text[16384];
    int sv[2], small = 4096;

    (void)state;
    assert_int_equal(agt_sim_create(&cfg, &bp), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    assert_int_equal(agt_sim_serve_fd(bp, sv[1], AGT_SIM_RTSP, "cam-bp"), 0);
    struct conn *c = conn_new(sv[0]);
    setup_and_play(c, session, &seq, &ts);
    /* Unread, 1.5 s makes 150 frames due, ~6 MB: far over the 512 KiB backlog. Wait for the
     * drops rather than sleeping, in case the simulator's thread falls behind. */
    uint64_t deadline = mono_ms() + 10000;
    do {
        usleep(20 * 1000);
        agt_sim_get_stats(bp, &st);
    } while (st.frames_dropped <= 50 && mono_ms() < deadline);
    assert_true(st.frames_dropped > 50);
    /* drain: after every gap in timestamps the next AU must start with SPS (a keyframe) */
    struct packet *pkt = malloc(sizeof(*pkt));
    bool au_start = true, saw_gap = false;
    int aus = 0;
    while (aus < 60) {
        enum item it = conn_next(c, 3000, text, sizeof(text), pkt);
        assert_int_equal(it, ITEM_PACKET);
        if (au_start) {
            uint32_t t = rtp_ts(pkt);
            if (aus > 0 && t - last_ts != 900) {
                assert_int_equal(nal_type_of(pkt), 7);
                saw_gap = true;
            }
            last_ts = t;
        }
        au_start = pkt->data[1] & 0x80;
        aus += au_start;
    }
    free(pkt);
    assert_true(saw_gap);
    conn_free(c);
    agt_sim_destroy(bp);
}

static void test_sim_many_sessions_one_thread(void **state)
{
    enum { N = 200 };
    struct conn **cs = calloc(N, sizeof(*cs));
    struct pollfd *pf = calloc(N, sizeof(*pf));
    int *markers = calloc(N, sizeof(*markers));
    uint64_t *played = calloc(N, sizeof(*played));
    static char text[16384];
    struct packet *pkt = malloc(sizeof(*pkt));
    char session[17];
    uint16_t seq;
    uint32_t ts;

    (void)state;
    for (int i = 0; i < N; i++) {
        char serial[32];
        snprintf(serial, sizeof(serial), "cam-%03d", i);
        cs[i] = connect_sim(sim, AGT_SIM_RTSP, serial);
        played[i] = mono_ms(); /* the session's clock starts after this */
        setup_and_play(cs[i], session, &seq, &ts);
    }
    uint64_t end = mono_ms() + 600;
    while (mono_ms() < end) {
        for (int i = 0; i < N; i++)
            pf[i] = (struct pollfd){.fd = cs[i]->fd, .events = POLLIN};
        poll(pf, N, 50);
        for (int i = 0; i < N; i++) {
            if (!(pf[i].revents & POLLIN))
                continue;
            conn_fill(cs[i], 0);
            enum item it;
            while (cs[i]->len && (it = conn_next(cs[i], 0, text, sizeof(text), pkt)) == ITEM_PACKET)
                markers[i] += (pkt->data[1] & 0x80) != 0;
        }
    }
    uint64_t now = mono_ms();
    for (int i = 0; i < N; i++) {
        assert_true(markers[i] >= 10); /* >= 0.6 s at 20 fps */
        /* Not faster than 20 fps since its PLAY (however long setting up the others took):
         * one frame at once, then one per 50 ms, and one for rounding. */
        assert_true(markers[i] <= (int)((now - played[i]) / 50) + 2);
        conn_free(cs[i]);
    }
    free(pkt);
    free(played);
    free(markers);
    free(pf);
    free(cs);
}

static void test_sim_http_pages(void **state)
{
    static const struct {
        const char *req, *status, *body;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK",
         "camrelay simulated camera cam-web"},
        {"GET /?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", "320x240"},
        {"GET /api/params HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK",
         "\"serial\":\"cam-web\",\"name\":\"sim-test\",\"codec\":\"H264\""},
        {"GET /api/params HTTP/1.1\r\n\r\n", "Content-Type: application/json", "\"width\":320"},
        {"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "404"},
        {"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed",
         "Allow: GET, HEAD"},
        {"HEAD / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "Connection: close"},
        {"GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request", "400"},
        {"GET / SPDY/3\r\n\r\n", "HTTP/1.1 400 Bad Request", "400"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conn *c = connect_sim(sim, AGT_SIM_HTTP, "cam-web");
        send_str(c->fd, cases[i].req);
        size_t got = 0;
        while (conn_fill(c, 3000) > 0)
            got = c->len;
        assert_true(got > 0); /* then EOF: Connection: close */
        c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
        assert_non_null(strstr((char *)c->buf, cases[i].status));
        assert_non_null(strstr((char *)c->buf, cases[i].body));
        if (strncmp(cases[i].req, "HEAD", 4) == 0)
            assert_null(strstr((char *)c->buf, "<html>"));
        conn_free(c);
    }
    /* a request head larger than the buffer gets 431 */
    struct conn *c = connect_sim(sim, AGT_SIM_HTTP, "cam-web");
    char *big = malloc(9000);
    memset(big, 'a', 9000);
    memcpy(big, "GET /", 5);
    assert_int_equal(write(c->fd, big, 9000), 9000);
    while (conn_fill(c, 3000) > 0)
        ;
    c->buf[c->len] = '\0';
    assert_non_null(strstr((char *)c->buf, "HTTP/1.1 431 "));
    free(big);
    conn_free(c);
}

static void test_sim_serve_fd_rejects_bad_arguments(void **state)
{
    int sv[2], pfd[2], udp;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(agt_sim_serve_fd(sim, sv[1], AGT_SIM_RTSP, "bad serial"), -EINVAL);
    assert_int_equal(fcntl(sv[1], F_GETFD), -1); /* consumed even on error */
    assert_int_equal(agt_sim_serve_fd(sim, sv[0], (enum agt_sim_service)7, "x"), -EINVAL);
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(agt_sim_serve_fd(sim, pfd[0], AGT_SIM_RTSP, "x"), -ENOTSOCK);
    close(pfd[1]);
    udp = socket(AF_INET, SOCK_DGRAM, 0);
    assert_int_equal(agt_sim_serve_fd(sim, udp, AGT_SIM_RTSP, "x"), -EINVAL);
    assert_int_equal(agt_sim_serve_fd(sim, -1, AGT_SIM_RTSP, "x"), -EINVAL);
}

static void test_sim_listen_tcp(void **state)
{
    uint16_t rport = 0, hport = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd;

    (void)state;
    assert_int_equal(agt_sim_listen(sim, AGT_SIM_RTSP, "127.0.0.1:0", &rport), 0);
    assert_int_equal(agt_sim_listen(sim, AGT_SIM_HTTP, "127.0.0.1:0", &hport), 0);
    assert_true(rport > 0 && hport > 0 && rport != hport);
    assert_int_equal(agt_sim_listen(sim, AGT_SIM_RTSP, "127.0.0.1", NULL), -EINVAL);
    assert_int_equal(agt_sim_listen(sim, AGT_SIM_RTSP, "127.0.0.1:99999", NULL), -EINVAL);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons(rport);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct conn *c = conn_new(fd);
    char *r = request(c, "OPTIONS rtsp://127.0.0.1/ RTSP/1.0\r\nCSeq: 1\r\n\r\n", NULL);
    assert_non_null(strstr(r, "RTSP/1.0 200 OK\r\n"));
    conn_free(c);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons(hport);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    c = conn_new(fd);
    send_str(fd, "GET /api/params HTTP/1.1\r\n\r\n");
    while (conn_fill(c, 3000) > 0)
        ;
    c->buf[c->len] = '\0';
    assert_non_null(strstr((char *)c->buf, "\"serial\":\"sim-test\""));
    conn_free(c);
}

static int group_setup(void **state)
{
    struct agt_sim_config cfg = {.fps = 20, .name = "sim-test"};

    (void)state;
    if (test_tmpdir(tmpdir, sizeof(tmpdir)) < 0)
        return -1;
    snprintf(small_clip, sizeof(small_clip), "%s/small.h264", tmpdir);
    snprintf(big_clip, sizeof(big_clip), "%s/big.h264", tmpdir);
    if (write_clip(small_clip, 10, 5, 2000, 300) || write_clip(big_clip, 20, 10, 60000, 30000))
        return -1;
    cfg.clip_path = small_clip;
    if (agt_sim_create(&cfg, &sim))
        return -1;
    const struct agt_clip *clip = agt_sim_clip(sim);
    return clip->info.width == 320 && clip->n_aus == 10 ? 0 : -1;
}

static int group_teardown(void **state)
{
    struct clips c;

    (void)state;
    agt_sim_destroy(sim);
    snprintf(c.dir, sizeof(c.dir), "%s", tmpdir);
    clips_remove(&c);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_rtsp_options_and_describe),
        cmocka_unit_test(test_sim_rtsp_request_one_byte_at_a_time),
        cmocka_unit_test(test_sim_rtsp_garbage_gets_400_and_close),
        cmocka_unit_test(test_sim_rtsp_header_overflow_closes),
        cmocka_unit_test(test_sim_rtsp_play_streams_paced_rtp),
        cmocka_unit_test(test_sim_rtsp_backpressure_drops_until_keyframe),
        cmocka_unit_test(test_sim_many_sessions_one_thread),
        cmocka_unit_test(test_sim_http_pages),
        cmocka_unit_test(test_sim_serve_fd_rejects_bad_arguments),
        cmocka_unit_test(test_sim_listen_tcp),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
