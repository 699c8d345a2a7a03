// fuzz_replay.h: the replay driver every harness of tests/fuzz shares when
// it is not built for libFuzzer: a main that runs the files named on its
// command line, or, given none, the harness's seeds and a bounded number
// of deterministic mutations of them (what ctest runs, under ASan in CI),
// and that writes the seeds as a corpus with `--write-seeds DIR` (what
// .ci/run starts libFuzzer from).
//
// A harness defines LLVMFuzzerTestOneInput and a seed function, then:
//
//     int main(int argc, char **argv) {
//         return fuzz_replay_main(argc, argv, &(fuzz_replay){...});
//     }
#ifndef TR_FUZZ_REPLAY_H
#define TR_FUZZ_REPLAY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// What a harness gives the driver.
typedef struct fuzz_replay {
    const char *name; // for the summary line
    // seed fills buf (cap bytes) with seed number i and returns its length.
    size_t (*seed)(int i, uint8_t *buf, size_t cap);
    int nseeds;
    int mutations;
    // done prints the summary's end (what the runs showed); NULL: "".
    const char *(*done)(void);
} fuzz_replay;

#define FUZZ_SEED_MAX 1024 // bytes a seed may have

static uint64_t fuzz_rng = 0x2545f4914f6cdd1dull;

static uint32_t
fuzz_rand(void)
{
    fuzz_rng ^= fuzz_rng << 13;
    fuzz_rng ^= fuzz_rng >> 7;
    fuzz_rng ^= fuzz_rng << 17;
    return (uint32_t)(fuzz_rng >> 11);
}

// fuzz_mutate changes buf in place (a flipped bit, a random byte, a
// truncation, an inserted byte) and returns the new length.
static size_t
fuzz_mutate(uint8_t *buf, size_t len, size_t cap)
{
    int k = 1 + (int)(fuzz_rand() % 3);
    for (int j = 0; j < k && len > 0; j++) {
        size_t at = fuzz_rand() % len;
        switch (fuzz_rand() % 4) {
        case 0:
            buf[at] ^= (uint8_t)(1u << (fuzz_rand() % 8));
            break;
        case 1:
            buf[at] = (uint8_t)fuzz_rand();
            break;
        case 2:
            len = at;
            break;
        default:
            if (len < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = (uint8_t)fuzz_rand();
                len++;
            }
            break;
        }
    }
    return len;
}

static int
fuzz_run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

// fuzz_write_seeds writes the seeds into dir, a corpus to start libFuzzer
// from.
static int
fuzz_write_seeds(const fuzz_replay *r, const char *dir)
{
    uint8_t buf[FUZZ_SEED_MAX];
    for (int i = 0; i < r->nseeds; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/seed-%d", dir, i);
        FILE *f = fopen(path, "wb");
        if (f == NULL) {
            perror(path);
            return 1;
        }
        size_t n = r->seed(i, buf, sizeof(buf));
        if (fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
            perror(path);
            return 1;
        }
    }
    return 0;
}

static int
fuzz_replay_main(int argc, char **argv, const fuzz_replay *r)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        return fuzz_write_seeds(r, argv[2]);
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            if (fuzz_run_file(argv[i]) != 0) {
                return 1;
            }
        }
        return 0;
    }
    uint8_t buf[FUZZ_SEED_MAX];
    size_t runs = 0;
    for (int i = 0; i < r->nseeds; i++) {
        size_t n = r->seed(i, buf, sizeof(buf));
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    for (int m = 0; m < r->mutations; m++) {
        size_t n = r->seed(m % r->nseeds, buf, sizeof(buf));
        n = fuzz_mutate(buf, n, sizeof(buf));
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    printf("fuzz_%s: %zu inputs, %s\n", r->name, runs, r->done != NULL ? r->done() : "");
    return 0;
}

#endif
