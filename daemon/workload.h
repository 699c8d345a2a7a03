// workload.h: the workload file parser of `troupe run FILE`. A workload is a
// YAML (or JSON, which is YAML's flow syntax) file that lists jobs, their
// dependencies and groups; trd_workload_parse turns one into the
// SubmitBatch (proto/troupe/v1/job.proto) that the client submits. Both
// syntaxes go through libyaml's event API, so that every error, syntax or
// meaning (an unknown key, a cycle, a name nobody defines), names its
// line:column. Internal to the daemon and the CLI (trd_ prefix): no
// runtime, no actors, no IO; the caller reads the file.
//
// The format (README.md, "Workload files", says the same for users):
//
//     version: 1               # optional; another major version is an error
//     groups:                  # optional: name -> GroupSpec
//       build: {parallel: 2}   # 0 or absent: the number of cores
//     defaults:                # optional: job fields (not name, after,
//       group: build           # replicas), for jobs that do not set them
//     jobs:                    # required, a non-empty sequence of mappings
//       - name: compile        # unique; needed only if someone refers to it
//         run: make -j2        # exactly one of run (sh -c), exec (argv),
//                              # sleep (a duration), noop (true) or
//                              # plugin: {kind: NAME, args: "bytes"} (a
//                              # kind a plugin of trouped registered;
//                              # args optional, the string's bytes)
//         after: [fetch]       # a name or a sequence of names of this file
//         on_dep_failure: fail # fail | skip
//         replicas: 8          # compile[0]..compile[7], env TROUPE_INDEX=i and
//                              # TROUPE_REPLICAS=8; `after: [compile]` means
//                              # after all 8
//         retries: 3
//         backoff: 1s          # and backoff_max, timeout, kill_grace
//         env: {KEY: value}    # values as written (numbers and bools too)
//         cwd: /path
//         stdin: "text"
//         priority: 5          # int32
//         slots: 2             # >= 1
//         labels: {k: v}
//         rlimits: {nofile: 1024, core: {soft: 0, hard: 0}, stack: unlimited}
//
// Types. Integers are plain decimal scalars (`5`, `-3`; not quoted, no
// 0x). Booleans: true/false (also True, TRUE, False, FALSE). Strings are any
// scalar but null (`~`, `null`, or nothing), as written: `env: {N: 010}`
// gives "010". A duration is a plain non-negative integer of milliseconds,
// or a string of number-unit pairs with units ms, s, m and h (`250ms`,
// `1.5s`, `10m`, `1h30m`); it must come to a whole number of milliseconds,
// at most TRD_WL_MAX_DURATION_MS. rlimits names: as, core, cpu, data, fsize,
// memlock, nofile, nproc, rss, stack (Linux x86-64 RLIMIT_* numbers); a
// value is an integer (soft = hard), `unlimited` (RLIM_INFINITY), or a
// mapping with both soft and hard (soft <= hard). TROUPE_INDEX and
// TROUPE_REPLICAS are reserved env names.
//
// Meaning. defaults apply field by field: a job that sets a field (env,
// labels and rlimits included) replaces the defaults' value whole, and a job
// that sets any of run/exec/sleep/noop/plugin replaces the defaults' task. A job
// with replicas (even 1) becomes that many JobSpecs, in place, named
// NAME[i] (unnamed stays unnamed), each with TROUPE_INDEX=i and
// TROUPE_REPLICAS=N appended to its env; an `after` naming it expands to
// every replica. An expanded name must not be a job name of the file. A
// job's `after` may not name itself, an unknown job or one job twice, and
// the dependencies must have no cycle: the error spells one out,
// `a -> b -> a` (a runs after b, which runs after a), at the name of its
// first job. A group a job names need not be defined (the daemon's
// default limit applies). Refused: unknown and duplicate keys, wrong
// types, YAML anchors and aliases (so an alias bomb never expands), tags
// other than the standard ones (!!str, !!int, !!float, !!bool, !!null,
// !!seq, !!map, and `!`), complex (non-scalar) keys, and more than one
// document.
//
// Sharing. Replicas of a job, and jobs that take a field from defaults,
// point at the same arena objects (strings, argv, env entries, labels,
// rlimits, after_names): treat everything below a JobSpec's own fields as
// read-only, or copy it first.
#ifndef TRD_WORKLOAD_H
#define TRD_WORKLOAD_H

#include <stddef.h>

#include <troupe/actor.h>
#include <troupe/v1/job.pb-c.h>

// Limits. Past any of them the parse fails with TR_ETOOBIG.
#define TRD_WL_MAX_FILE (16u << 20)   // bytes of input (the caller checks it first)
#define TRD_WL_MAX_JOBS 100000u       // JobSpecs, after replicas
#define TRD_WL_MAX_REPLICAS 10000u    // replicas: 1..this
#define TRD_WL_MAX_DEPTH 32u          // nested sequences and mappings, the root's included
#define TRD_WL_MAX_SCALAR (1u << 20)  // bytes of one scalar
#define TRD_WL_MAX_NODES (4u << 20)   // scalars, sequences and mappings of the file
#define TRD_WL_MAX_BATCH (256u << 20) // about the packed bytes of the batch, after replicas
#define TRD_WL_MAX_DURATION_MS 18446744073709ull // UINT64_MAX ns, in ms

// Where and why a parse failed. line and column are 1-based (a column
// counts characters); msg has no position in it (print
// "FILE:LINE:COLUMN: msg").
typedef struct trd_diag {
    unsigned line, column;
    char msg[256];
} trd_diag;

// trd_workload_parse parses text (len bytes, need not be NUL-terminated)
// into *out: one tr_msg whose body is a Troupe__V1__SubmitBatch, with
// everything it points to in its arena (tr_msg_free frees it all; the
// caller owns it). job_count equals n_jobs. On error returns TR_EINVAL (a
// syntax or meaning error), TR_ETOOBIG (past a limit above) or TR_ENOMEM
// (libyaml ran out of memory), sets *out to NULL and fills *diag (when not
// NULL); on success *diag is zeroed. Does not block; any thread; the
// parser keeps no state between calls.
tr_err trd_workload_parse(const char *text, size_t len, tr_msg **out, trd_diag *diag);

// trd_parse_duration parses number-unit pairs (`1h30m`, `1.5s`, `250ms`;
// n bytes at s) into *out ms, as workload files spell durations: NULL, or
// why not (a static text). The CLI's --timeout uses it too.
const char *trd_parse_duration(const char *s, size_t n, uint64_t *out);

#endif
