// troupe/proc_actor.h: an external program as an actor. The actor starts
// the program, feeds it its stdin bytes, captures its stdout and stderr up
// to a cap (or streams them), enforces a timeout, and when the program's
// leader exits sends its owner one ProcessExit message
// (proto/troupe/v1/process.proto) and stops. The daemon's exec jobs run
// through it.
//
// What the owner receives, in this order (every message's reply-to is the
// process actor, so a ProcessKill can go back there while it runs):
//   - ProcessStarted, always, once the program runs as asked (spawned,
//     rlimits applied, in its cgroup): its pid, its start time (clock ticks
//     since boot, /proc/PID/stat field 22, so that a daemon can recognise
//     its own leader after a crash: compare with tr_proc_start_time) and
//     its cgroup. Not sent when it could not be started or configured;
//   - with stream_output, ProcessOutput chunks as the output arrives
//     (stream 1 stdout, 2 stderr; offset: that stream's bytes delivered
//     before the chunk; chunks of up to 64 KiB), contiguous per stream;
//   - exactly one ProcessExit, also when the program cannot be started or
//     configured (error set; pid 0 when nothing was spawned). With
//     stream_output its stdout and stderr are empty: it carries the byte
//     counts and truncated only.
//
// A slow owner never blocks the program: the actor keeps draining its
// pipes and buffers what it has not delivered yet, up to the cap per
// stream (which bounds delivery anyway), and sends when the owner's
// mailbox has room (a bounded mailbox that is full delays the messages;
// nothing is sent on the forced lane and nothing below the cap is lost).
// So an owner that stops reading delays its own messages, not the program.
//
// The program's leader runs in a session of its own (setsid: its pid is
// its session and process group id, and it has no controlling terminal),
// so a timeout, a ProcessKill with no signal or a stop of the actor
// signals the whole group (kill(-pid)): SIGTERM, then SIGKILL after the
// grace period (with a cgroup, the SIGKILL is the cgroup's: cgroup.kill).
// A ProcessKill with a signal sends that signal to the group, and, with a
// cgroup, to every other process in it (a descendant that left the group). The exit is
// its leader's exit, not the end of its pipes (a grandchild may keep them
// open): output that arrives after the leader exited is not reported. Past
// the cap, output is still drained (the program never blocks on a full
// pipe) and thrown away, and ProcessExit says truncated.
//
// The cgroup is made before the spawn, and the program starts inside it
// (clone3 with CLONE_INTO_CGROUP: troupe/process.h), so nothing it forks
// escapes it; on a kernel without clone3 (before 5.7) its pid is written
// to cgroup.procs right after the spawn instead, and a child it forks in
// its first microseconds may escape (still in its session, though).
// rlimits are applied right after the spawn (no spawn call takes them):
// prlimit(2). Only then is its stdin written, so a program that reads its
// stdin before doing anything runs under them for sure; one that does not
// runs its first instructions (some microseconds) without its limits. A
// failure to apply them kills the just-spawned group and is the
// ProcessExit's error: no half-configured program runs on.
//
// With cgroup_parent, the program runs in a fresh cgroup v2 directory
// below it (troupe-<our pid>-<n>), which catches what setsid cannot: a
// grandchild that made a session of its own. The job ends with its
// leader: when the leader has exited, whatever is left in the cgroup is
// killed (cgroup.kill; where that file is missing, each pid in
// cgroup.procs gets SIGKILL), and ProcessExit is sent once the cgroup is
// empty (cgroup.events says "populated 0") and removed. If it is not empty
// within the grace period, ProcessExit goes anyway and the directory is
// removed once it empties. A runtime shut down meanwhile kills what is in
// it but may leave the empty directory behind.
//
// With cgroup_reuse as well, a cgroup found empty after its leader's exit
// is not removed but kept (up to 64 in the process) for the next program
// started below the same parent with cgroup_reuse: the kernel's mkdir and
// rmdir of a cgroup cost tens of microseconds each, which a daemon running
// short jobs pays per job. A kept cgroup holds no process (it was seen
// empty), so a program never shares one with another. Its name then no
// longer names one program (ProcessStarted's cgroup may repeat), and it
// outlives ProcessExit: tr_proc_cgroup_release removes the kept ones.
#ifndef TROUPE_PROC_ACTOR_H
#define TROUPE_PROC_ACTOR_H

#include <sys/types.h>

#include <troupe/actor.h>
#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/v1/process.pb-c.h>

TR_BEGIN_DECLS

// The default capture cap, per stream.
#define TR_PROC_OUTPUT_CAP_DEFAULT ((size_t)1 << 20)

// The most rlimits one program may ask for.
#define TR_PROC_RLIMITS_MAX 8

// One resource limit (setrlimit(2)): resource is an RLIMIT_* constant,
// soft and hard the limits (RLIM_INFINITY: none).
typedef struct tr_proc_rlimit {
    int resource;
    uint64_t soft, hard;
} tr_proc_rlimit;

typedef struct tr_proc_opts {
    char *const *argv;      // required: NULL-terminated, argv[0] the program
    char *const *envp;      // NULL: the parent's environment
    const char *cwd;        // NULL: the parent's
    const void *stdin_data; // written to its stdin, which is then closed
    size_t stdin_len;       // (0 and NULL: stdin is /dev/null)
    uint64_t timeout_ms;    // 0: none
    uint64_t kill_grace_ms; // SIGTERM to SIGKILL; 0: 2000
    size_t output_cap;      // bytes kept per stream; 0: TR_PROC_OUTPUT_CAP_DEFAULT
    bool search_path;       // look argv[0] up in PATH when it has no slash
    bool stream_output;     // ProcessOutput chunks while it runs (see above)
    // Limits applied to the leader right after the spawn (its children
    // inherit them): up to TR_PROC_RLIMITS_MAX. A bad request (an unknown
    // resource, soft above hard) is the ProcessExit's error (TR_EINVAL)
    // and nothing runs; one the kernel refuses (raising a hard limit
    // without privilege: TR_EPERM) too, the spawned group being killed.
    const tr_proc_rlimit *rlimits;
    size_t nrlimits;
    // A writable cgroup v2 directory: the program runs in a new child
    // cgroup of it (see above). NULL: no cgroup. A failure to make or enter
    // it is the ProcessExit's error: nothing runs unconfined.
    const char *cgroup_parent;
    bool cgroup_reuse; // keep the emptied cgroup for the next program (see above)
} tr_proc_opts;

// tr_proc_actor_start starts the program described by o as an actor of rt
// that reports to owner: TR_OK and *addr (may be NULL). owner gets exactly
// one ProcessExit, also when the program cannot be started or configured
// (error set; TR_OK is still returned: the failure is the report).
// TR_EINVAL (no argv, more than TR_PROC_RLIMITS_MAX rlimits, or nrlimits
// with no array) and tr_actor_spawn's errors start nothing and send
// nothing. o and what it points to are copied. Where it runs: the spawn
// (posix_spawn, which blocks the calling thread until the program's exec,
// about 0.1 ms), the prlimits and the cgroup's mkdir and write run on the
// calling thread; a caller on a worker blocks that worker for as long.
// Any thread.
TR_API tr_err tr_proc_actor_start(tr_rt *rt, const tr_proc_opts *o, tr_actor_addr owner,
                                  tr_actor_addr *addr);

// tr_proc_start_time reads the start time of process pid, in clock ticks
// since boot (/proc/PID/stat field 22, as ProcessStarted reports it):
// TR_OK and *out, TR_ENOTFOUND when no such process exists (a zombie not
// yet reaped still does), TR_EIO when the file cannot be read or parsed.
// A pid whose start time differs from the one recorded is another process
// that reused the pid. Blocks on one small /proc read. Any thread.
TR_API tr_err tr_proc_start_time(pid_t pid, uint64_t *out);

// tr_proc_cgroup_release removes (rmdir) and forgets the cgroups kept for
// reuse below parent (NULL: below any parent). Call it before removing
// parent, and before exit (what is kept is heap memory too). Programs
// that still run are not affected: only empty, kept cgroups are removed.
// Any thread.
TR_API void tr_proc_cgroup_release(const char *parent);

TR_END_DECLS

#endif
