/* Real-peer test of agent/sim_rtsp.c: ffmpeg records from the simulator, ffprobe counts frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent/sim.h"
#include "tests/agent/helpers.h"

#define RECORD_S 3
#define CLIP_FPS 8

static struct clips clips;

struct probe {
    int width;
    int height;
    int frames;
    double duration;
};

static int probe_file(const char *path, const char *out_path, struct probe *p)
{
    char *argv[] = {"ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                    "-show_entries", "stream=width,height,duration,nb_read_frames", "-of",
                    "default=nw=1", (char *)path, NULL};
    char line[128];
    FILE *f;

    *p = (struct probe){0};
    if (run_cmd(argv, out_path, 60) != 0 || !(f = fopen(out_path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "width=%d", &p->width);
        sscanf(line, "height=%d", &p->height);
        sscanf(line, "nb_read_frames=%d", &p->frames);
        sscanf(line, "duration=%lf", &p->duration);
    }
    fclose(f);
    return 0;
}

/* Counts lines of the ffmpeg log that report loss or corruption. (Its warnings "Timestamps are
 * unset in a packet" and "Non-monotonous DTS ... previous: 0, current: 0" for the very first
 * packet are ffmpeg's own RTSP/H.264 demuxing, seen with real cameras too, so not counted.) */
static int loss_complaints(const char *log_path)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(log_path, "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "missed") || strstr(line, "corrupt") || strstr(line, "Invalid") ||
            strstr(line, "max delay"))
            n++;
    fclose(f);
    return n;
}

/* Serves clip, records RECORD_S seconds with ffmpeg over RTSP/TCP and checks the result. */
static void record_and_check(const char *clip, const char *tag)
{
    struct agt_sim_config cfg = {.clip_path = clip, .name = "ffmpeg-peer"};
    struct agt_sim *sim;
    struct probe pr;
    uint16_t port = 0;
    char url[64], out[192], log[192], probe_out[192], dur[8];
    int expected = RECORD_S * CLIP_FPS;

    snprintf(out, sizeof(out), "%s/rec-%s.mp4", clips.dir, tag);
    snprintf(log, sizeof(log), "%s/ffmpeg-%s.log", clips.dir, tag);
    snprintf(probe_out, sizeof(probe_out), "%s/probe-%s.txt", clips.dir, tag);
    snprintf(dur, sizeof(dur), "%d", RECORD_S);
    assert_int_equal(agt_sim_create(&cfg, &sim), 0);
    assert_int_equal(agt_sim_listen(sim, AGT_SIM_RTSP, "127.0.0.1:0", &port), 0);
    snprintf(url, sizeof(url), "rtsp://127.0.0.1:%u/", port);
    char *rec[] = {"ffmpeg", "-nostdin", "-y", "-rtsp_transport", "tcp", "-i", url, "-t", dur,
                   "-c", "copy", out, NULL};
    int rc = run_cmd(rec, log, 30);
    uint64_t sent = agt_sim_frames_sent_total(sim);
    agt_sim_destroy(sim);
    assert_int_equal(rc, 0);
    assert_int_equal(probe_file(out, probe_out, &pr), 0);
    print_message("%s: expected %d frames (%d s x %d fps), ffprobe counted %d, %dx%d, "
                  "%.3f s, simulator sent %llu\n",
                  tag, expected, RECORD_S, CLIP_FPS, pr.frames, pr.width, pr.height, pr.duration,
                  (unsigned long long)sent);
    assert_int_equal(pr.width, 320);
    assert_int_equal(pr.height, 240);
    assert_true(pr.frames >= expected - 2 && pr.frames <= expected + 2);
    assert_true(sent >= (uint64_t)pr.frames);
    assert_true(pr.duration > RECORD_S - 0.3 && pr.duration < RECORD_S + 0.3);
    assert_int_equal(loss_complaints(log), 0);
}

static void skip_without_clips(void)
{
    if (!clips.ok) {
        print_message("skipped: ffmpeg with libx264 could not make fixture clips\n");
        skip();
    }
}

static void test_sim_rtsp_ffmpeg_records_mp4_clip(void **state)
{
    (void)state;
    skip_without_clips();
    record_and_check(clips.mp4, "mp4");
}

static void test_sim_rtsp_ffmpeg_records_annexb_clip(void **state)
{
    (void)state;
    skip_without_clips();
    record_and_check(clips.h264, "annexb");
}

static int group_setup(void **state)
{
    (void)state;
    clips_make(&clips);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    clips_remove(&clips);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_rtsp_ffmpeg_records_mp4_clip),
        cmocka_unit_test(test_sim_rtsp_ffmpeg_records_annexb_clip),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
