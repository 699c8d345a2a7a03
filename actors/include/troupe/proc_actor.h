// troupe/proc_actor.h: an external program as an actor. The actor starts
// the program, feeds it its stdin bytes, captures its stdout and stderr up
// to a cap, enforces a timeout, and when the program's leader exits sends
// its owner one ProcessExit message (proto/troupe/v1/process.proto) and
// stops. The daemon's exec jobs run through it.
//
// The program's leader runs in a session of its own (setsid: its pid is
// its session and process group id, and it has no controlling terminal),
// so a timeout, a ProcessKill or a stop of the actor signals the whole
// group (kill(-pid)): SIGTERM, then SIGKILL after the grace period. The exit is its leader's exit,
// not the end of its pipes (a grandchild may keep them open): output that arrives after the leader
// exited is not reported. Past the cap, output is still drained (the program never blocks on a full
// pipe) and thrown away, and ProcessExit says truncated.
#ifndef TROUPE_PROC_ACTOR_H
#define TROUPE_PROC_ACTOR_H

#include <troupe/actor.h>
#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/v1/process.pb-c.h>

TR_BEGIN_DECLS

// The default capture cap, per stream.
#define TR_PROC_OUTPUT_CAP_DEFAULT ((size_t)1 << 20)

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
} tr_proc_opts;

// tr_proc_actor_start starts the program described by o as an actor of rt
// that reports to owner: TR_OK and *addr (may be NULL). owner gets exactly
// one ProcessExit, also when the program cannot be started (error set;
// TR_OK is still returned: the failure is the report). TR_EINVAL (no
// argv) and tr_actor_spawn's errors start nothing. o and what it points to
// are copied. The spawn (posix_spawn, about 0.1 ms until exec) runs on the
// calling thread. Any thread.
TR_API tr_err tr_proc_actor_start(tr_rt *rt, const tr_proc_opts *o, tr_actor_addr owner,
                                  tr_actor_addr *addr);

TR_END_DECLS

#endif
