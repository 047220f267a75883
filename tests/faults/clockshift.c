/* LD_PRELOAD shim: shifts the wall clock (CLOCK_REALTIME, gettimeofday, time) of one process by
 * CLOCK_SHIFT_S seconds, leaving CLOCK_MONOTONIC alone (libfaketime also shifts monotonic waits and
 * hangs Python). Used by tests/faults/test_stalls.py to put one worker 10 minutes ahead and one behind. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long shift(void) {
    static int ready = 0;
    static long s = 0;
    if (!ready) {
        const char *e = getenv("CLOCK_SHIFT_S");
        s = e ? atol(e) : 0;
        ready = 1;
    }
    return s;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *) = 0;
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) ts->tv_sec += shift();
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *) = 0;
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += shift();
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
