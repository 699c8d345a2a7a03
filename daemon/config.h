// config.h: trouped's settings, from its four sources, in rising
// precedence: the built-in defaults, the config file, the environment
// (TROUPED_<KEY>), the command line (--<key>). Every setting has one key,
// the same in all three: `max-queued` in the file, TROUPED_MAX_QUEUED in
// the environment, --max-queued on the command line.
//
// The config file: one `key = value` per line; blank lines and lines that
// start with `#` are ignored; a value may be wrapped in double quotes (kept
// as it is inside them: no escapes); booleans are true/false, yes/no, on/off
// or 1/0. An unknown key, a key set twice, a bad value or a line that is not
// `key = value` is an error naming the file and line. Internal to the daemon
// (trd_); a pure decoder (no I/O but trd_config_load_file), with a fuzz
// harness in tests/fuzz.
#ifndef TRD_CONFIG_H
#define TRD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Where a setting came from; a higher source overrides a lower one.
typedef enum trd_source {
    TRD_SRC_DEFAULT = 0,
    TRD_SRC_FILE,
    TRD_SRC_ENV,
    TRD_SRC_FLAG,
} trd_source;

// Every setting, as its key names it.
typedef enum trd_key {
    TRD_K_STATE_DIR,
    TRD_K_EPHEMERAL,
    TRD_K_LISTEN,
    TRD_K_EVENTS,
    TRD_K_TCP,
    TRD_K_TLS_CERT_KEY,
    TRD_K_TOKEN_FILE,
    TRD_K_INSECURE_TCP,
    TRD_K_MAX_QUEUED,
    TRD_K_MAX_RUNNING,
    TRD_K_OUTPUT_CAP,
    TRD_K_DURABILITY,
    TRD_K_CGROUP,
    TRD_K_PLUGIN_DIR,
    TRD_K_WORKERS,
    TRD_K_COUNT
} trd_key;

// stdout and stderr kept per job (each) unless output-cap or the job's
// output_cap says otherwise.
#define TRD_OUTPUT_CAP_DEFAULT ((uint64_t)16 << 20)
// Jobs queued or running at most (max-queued): a Submit past it is refused
// with TR_ENOSPC.
#define TRD_MAX_QUEUED_DEFAULT 1000000u

// The largest config file read (bigger: an error).
#define TRD_CONFIG_FILE_MAX ((size_t)1 << 20)

// The settings. Strings are NULL (unset) or malloc'd and owned here.
typedef struct trd_config {
    char *state_dir;    // NULL: the default for the user
    bool ephemeral;     // a fresh temporary state directory
    char *listen;       // NULL: ipc:// in the runtime directory
    char *events;       // NULL: beside an ipc control socket; "none"
    char *tcp;          // NULL: no tcp listener
    char *tls_cert_key; // PEM file, certificate and key
    char *token_file;   // the bearer token's file
    bool insecure_tcp;  // plain tcp:// on loopback (tests)
    uint64_t max_queued;
    uint64_t max_running; // 0: no cap; at most UINT32_MAX
    uint64_t output_cap;  // > 0
    bool durability_full; // false: --durability=process
    char *cgroup;         // NULL: "auto"; "none"; a directory
    char *plugin_dir;     // NULL: no plugins
    uint64_t workers;     // the runtime's worker threads; 0: one per core; at most 255
    trd_source src[TRD_K_COUNT];
} trd_config;

// trd_key_name returns key's name ("max-queued"), or NULL past the last.
const char *trd_key_name(trd_key key);

// trd_key_is_bool reports whether key takes a boolean (a flag without an
// argument on the command line).
bool trd_key_is_bool(trd_key key);

// trd_key_lookup finds the key called name: true and *key, or false.
bool trd_key_lookup(const char *name, trd_key *key);

// trd_config_init fills c with the defaults.
void trd_config_init(trd_config *c);

// trd_config_free frees c's strings (c itself is the caller's).
void trd_config_free(trd_config *c);

// trd_config_set sets key to value (a boolean key given value NULL: true)
// from src, unless a higher source has set it already: true, or false with
// err saying what is wrong with the value (without naming where it came
// from: the caller adds that).
bool trd_config_set(trd_config *c, trd_source src, trd_key key, const char *value, char *err,
                    size_t errlen);

// trd_config_parse reads the len bytes of a config file's text (name says
// where it came from, for errors: "FILE:LINE: ..."): true, or false with err.
bool trd_config_parse(trd_config *c, const char *text, size_t len, const char *name, char *err,
                      size_t errlen);

// trd_config_load_file reads the config file at path: true when it was
// read, or when it does not exist and must_exist is false; false with err
// otherwise. Blocks (one small file).
bool trd_config_load_file(trd_config *c, const char *path, bool must_exist, char *err,
                          size_t errlen);

// trd_config_env applies envp's TROUPED_<KEY> variables (TROUPED_CONFIG
// aside): true, or false with err for a bad value. A TROUPED_ variable that
// names no setting is not an error: it is reported through warn (may be
// NULL) with its name.
bool trd_config_env(trd_config *c, char *const *envp, void (*warn)(const char *name), char *err,
                    size_t errlen);

// trd_config_finish settles what one source cannot: ephemeral and
// state-dir exclude each other when the same source sets both; from
// different sources the higher one wins. true, or false with err.
bool trd_config_finish(trd_config *c, char *err, size_t errlen);

#endif
