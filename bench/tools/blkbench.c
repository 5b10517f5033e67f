/*
 * blkbench: block-device throughput inside a benchmark guest (bench/blk_vs_qemu.py).
 *
 * Usage: blkbench DEVICE [SEQ_MIB [RAND_OPS [SEED]]]
 *
 * Four phases on DEVICE (destructive: it writes the first SEQ_MIB MiB):
 *   seq_write   SEQ_MIB MiB in 1 MiB blocks, then fsync
 *   seq_read    the same range in 1 MiB blocks
 *   rand_write  RAND_OPS 4 KiB writes at fixed-seed 4 KiB-aligned offsets in that range, then fsync
 *   rand_read   RAND_OPS 4 KiB reads at other fixed-seed offsets in that range
 * One request in flight at a time (queue depth 1), O_DIRECT when the device accepts it
 * (else buffered with fsync and BLKFLSBUF before each read phase), so every request
 * reaches the virtual device. Times come from CLOCK_MONOTONIC in the guest,
 * printed as integer nanoseconds (the tool uses no floating point).
 *
 * Every 4 KiB sector carries a tag derived from its offset in its first and last
 * 8 bytes; both read phases check them, so a device that returns wrong data is
 * reported (verify_errors) instead of silently looking fast.
 *
 * Output: one parseable line per phase, e.g.
 *   blkbench: result phase=seq_read bytes=268435456 ops=256 ns=512000000
 * plus "blkbench: begin phase=..." before each phase (the host timestamps these) and
 * "blkbench: done verify_errors=N". Exit status 0 when all phases ran and verified.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SEQ_BLOCK (1u << 20)
#define SECTOR 4096u

static int fd;
static int direct;
static long verify_errors;

/* Integer nanoseconds: no floating point anywhere, so the tool runs on an emulator
 * that does not implement SSE arithmetic yet; the host computes the rates. */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t tag(uint64_t off)
{
    return off * 0x9E3779B97F4A7C15ull ^ 0x68616b6f62656e63ull;
}

/* Marks each 4 KiB sector of buf (which lands at device offset off) with its tag. */
static void stamp(unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t s = 0; s < len; s += SECTOR) {
        uint64_t t = tag(off + s);
        uint64_t nt = ~t;
        memcpy(buf + s, &t, 8);
        memcpy(buf + s + SECTOR - 8, &nt, 8);
    }
}

static void check(const unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t s = 0; s < len; s += SECTOR) {
        uint64_t a, b, t = tag(off + s);
        memcpy(&a, buf + s, 8);
        memcpy(&b, buf + s + SECTOR - 8, 8);
        if (a != t || b != ~t) {
            if (verify_errors < 5)
                printf("blkbench: verify mismatch at offset %llu\n", (unsigned long long)(off + s));
            verify_errors++;
        }
    }
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64*: fixed seed, so both VMMs see the same offsets. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static void die(const char *what, uint64_t off)
{
    printf("blkbench: error %s at offset %llu: %s\n", what, (unsigned long long)off, strerror(errno));
    fflush(stdout);
    exit(2);
}

static void xfer(int write, unsigned char *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write ? pwrite(fd, buf + done, len - done, (off_t)(off + done))
                          : pread(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            die(write ? "write" : "read", off + done);
        }
        done += (size_t)n;
    }
}

static void sync_dev(void)
{
    if (fsync(fd) != 0)
        die("fsync", 0);
}

/* Without O_DIRECT, drop the guest's cached copy so reads reach the device. */
static void drop_cache(void)
{
    if (!direct) {
        sync_dev();
        ioctl(fd, BLKFLSBUF, 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
}

static void begin(const char *phase)
{
    printf("blkbench: begin phase=%s\n", phase);
    fflush(stdout);
}

static void result(const char *phase, uint64_t bytes, uint64_t ops, uint64_t ns)
{
    printf("blkbench: result phase=%s bytes=%llu ops=%llu ns=%llu\n", phase, (unsigned long long)bytes,
           (unsigned long long)ops, (unsigned long long)ns);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: blkbench DEVICE [SEQ_MIB [RAND_OPS [SEED]]]\n");
        return 1;
    }
    const char *dev = argv[1];
    uint64_t seq_mib = argc > 2 ? strtoull(argv[2], NULL, 0) : 64;
    uint64_t rand_ops = argc > 3 ? strtoull(argv[3], NULL, 0) : 2000;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 0) : 0x5eed;

    fd = open(dev, O_RDWR | O_DIRECT);
    direct = fd >= 0;
    if (!direct) {
        printf("blkbench: O_DIRECT refused (%s), using buffered I/O with fsync/BLKFLSBUF\n", strerror(errno));
        fd = open(dev, O_RDWR);
        if (fd < 0)
            die("open", 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
        off_t end = lseek(fd, 0, SEEK_END);
        size = end > 0 ? (uint64_t)end : 0;
    }
    uint64_t range = seq_mib << 20;
    if (range > size)
        range = size & ~(uint64_t)(SEQ_BLOCK - 1);
    if (range < SEQ_BLOCK) {
        printf("blkbench: error device %s too small (%llu bytes)\n", dev, (unsigned long long)size);
        return 2;
    }
    printf("blkbench: start device=%s size_bytes=%llu range_bytes=%llu odirect=%d rand_ops=%llu\n", dev,
           (unsigned long long)size, (unsigned long long)range, direct, (unsigned long long)rand_ops);

    unsigned char *buf;
    if (posix_memalign((void **)&buf, SECTOR, SEQ_BLOCK) != 0)
        die("posix_memalign", 0);
    memset(buf, 0xa5, SEQ_BLOCK);

    begin("seq_write");
    uint64_t t0 = now_ns();
    for (uint64_t off = 0; off < range; off += SEQ_BLOCK) {
        stamp(buf, SEQ_BLOCK, off);
        xfer(1, buf, SEQ_BLOCK, off);
    }
    sync_dev();
    result("seq_write", range, range / SEQ_BLOCK, now_ns() - t0);

    drop_cache();
    begin("seq_read");
    t0 = now_ns();
    for (uint64_t off = 0; off < range; off += SEQ_BLOCK) {
        xfer(0, buf, SEQ_BLOCK, off);
        check(buf, SEQ_BLOCK, off);
    }
    result("seq_read", range, range / SEQ_BLOCK, now_ns() - t0);

    uint64_t sectors = range / SECTOR;
    rng_state = seed | 1;
    begin("rand_write");
    t0 = now_ns();
    for (uint64_t i = 0; i < rand_ops; i++) {
        uint64_t off = (rnd() % sectors) * SECTOR;
        stamp(buf, SECTOR, off);
        xfer(1, buf, SECTOR, off);
    }
    sync_dev();
    result("rand_write", rand_ops * SECTOR, rand_ops, now_ns() - t0);

    drop_cache();
    rng_state = (seed * 0x9E3779B97F4A7C15ull) | 1;
    begin("rand_read");
    t0 = now_ns();
    for (uint64_t i = 0; i < rand_ops; i++) {
        uint64_t off = (rnd() % sectors) * SECTOR;
        xfer(0, buf, SECTOR, off);
        check(buf, SECTOR, off);
    }
    result("rand_read", rand_ops * SECTOR, rand_ops, now_ns() - t0);

    printf("blkbench: done verify_errors=%ld\n", verify_errors);
    fflush(stdout);
    close(fd);
    return verify_errors ? 3 : 0;
}
