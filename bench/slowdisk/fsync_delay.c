/* A slower disk for benchmarks: every fsync and fdatasync of the process
 * takes FSYNC_DELAY_US microseconds longer (after the real one), as on an
 * SD card or a cheap USB stick. Loaded with LD_PRELOAD by bench/bench.py
 * --fsync-delay-ms into the server and the ceiling programs alike; never
 * part of Sync Node itself.
 *   cc -O2 -shared -fPIC -o libfsync_delay.so fsync_delay.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
    const char *text = getenv("FSYNC_DELAY_US");
    long us = text ? atol(text) : 0;
    struct timespec pause = { us / 1000000, (us % 1000000) * 1000 };
    if (us > 0) nanosleep(&pause, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int result = real(fd);
    slow_down();
    return result;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int result = real(fd);
    slow_down();
    return result;
}
