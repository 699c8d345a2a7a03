// fuzz_config.c: trouped's config file parser (daemon/config.h), as a
// config file reaches it: any bytes. Every input must either parse, with
// every string setting non-empty and every number in its range, or be
// refused with a non-empty error that names the file and a line; no crash,
// no leak. What parsed must finish or be refused by trd_config_finish the
// same way.
//
// Built two ways, as every harness here (fuzz_replay.h): a libFuzzer
// target with clang and -DTR_FUZZ=ON (`fuzz_config corpus/`), and always
// a replay driver that ctest runs over the seeds below and a bounded number
// of deterministic mutations of them (fuzz.config).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static size_t parsed, refused;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_str(const char *s)
{
    if (s != NULL && s[0] == '\0') {
        fprintf(stderr, "fuzz_config: an empty string setting\n");
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    trd_config c;
    trd_config_init(&c);
    char err[512];
    err[0] = '\0';
    if (trd_config_parse(&c, (const char *)data, size, "f.conf", err, sizeof err)) {
        check_str(c.state_dir);
        check_str(c.listen);
        check_str(c.events);
        check_str(c.tcp);
        check_str(c.tls_cert_key);
        check_str(c.token_file);
        check_str(c.cgroup);
        check_str(c.plugin_dir);
        if (c.output_cap == 0 || c.max_running > UINT32_MAX) {
            fprintf(stderr, "fuzz_config: a number out of its range\n");
            abort();
        }
        for (unsigned k = 0; k < TRD_K_COUNT; k++) {
            if (c.src[k] != TRD_SRC_DEFAULT && c.src[k] != TRD_SRC_FILE) {
                abort();
            }
        }
        err[0] = '\0';
        if (!trd_config_finish(&c, err, sizeof err) && err[0] == '\0') {
            fprintf(stderr, "fuzz_config: finish refused without a reason\n");
            abort();
        }
        parsed++;
    } else {
        if (strncmp(err, "f.conf:", 7) != 0 || err[7] < '1' || err[7] > '9') {
            fprintf(stderr, "fuzz_config: a refusal without file:line: %s\n", err);
            abort();
        }
        refused++;
    }
    trd_config_free(&c);
    return 0;
}

#ifndef TR_LIBFUZZER

// ---------------------------------------------------------------------------
// The replay driver (fuzz_replay.h).

#include "fuzz_replay.h"

static const char *const seeds[] = {
    ("# trouped.conf\n"
     "state-dir = /var/lib/troupe\n"
     "listen = ipc:///run/troupe/trouped.sock\n"
     "events = none\n"
     "tcp = \"tls+tcp://0.0.0.0:7000\"\n"
     "tls-cert-key = /etc/troupe/cert.pem\n"
     "token-file = /etc/troupe/token\n"
     "max-queued = 100000\n"
     "max-running = 64\n"
     "output-cap = 1048576\n"
     "durability = full\n"
     "cgroup = auto\n"
     "plugin-dir = /usr/lib/troupe/plugins\n"),
    ("ephemeral = yes\r\nstate-dir = /x\r\n"),
    ("insecure-tcp = true\n  # indented\n\n\tdurability=process\n"),
    ("max-queued = 1\nmax-queued = 2\n"),
    ("cgroup = \"none\nlisten = \"\"\n= 3\n"),
    ("max-running = 4294967296\noutput-cap = 0\n"),
};

static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    size_t n = strlen(seeds[i]);
    if (n > cap) {
        abort();
    }
    memcpy(buf, seeds[i], n);
    return n;
}

static const char *
done(void)
{
    static char text[96];
    snprintf(text, sizeof text, "%zu parsed, %zu refused", parsed, refused);
    return text;
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"config", seed, (int)(sizeof seeds / sizeof seeds[0]), 20000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif
