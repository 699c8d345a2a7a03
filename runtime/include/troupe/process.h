// troupe/process.h: child processes. Spawn a program with each of its
// standard streams inherited, connected to /dev/null, or piped to the
// parent (the parent's ends are tr_io objects of the runtime); await its
// exit; send it signals.
//
// The child. It is started with posix_spawn (vfork-like: exec errors such
// as a missing program come back from tr_process_spawn; under valgrind,
// whose fork emulation hides them, the child exits with status 127
// instead). It gets an empty
// signal mask whatever the spawning thread blocks, the default disposition
// for every signal troupe has a handler for and for SIGPIPE and SIGXFSZ
// (which network programs often ignore, and which an ignored disposition
// would carry into the child), and none of the parent's descriptors other
// than the three standard streams: troupe's own descriptors are all
// close-on-exec, and every descriptor above 2 is closed in the child
// (posix_spawn_file_actions_addclosefrom_np), including ones the program
// opened without close-on-exec.
//
// Exit. The child's exit is awaited through a pidfd (pidfd_open) that the
// reactor watches. Where pidfd_open is missing (kernels before 5.3, and
// valgrind, which does not know the system call) troupe falls back to
// SIGCHLD, through troupe/signal.h's handler, and on each SIGCHLD a waiting
// task calls waitpid(pid, WNOHANG) for its own child only: never
// waitpid(-1), which would steal the children of other code in the
// process. Setting TROUPE_PROCESS_NO_PIDFD=1 in the environment forces the
// fallback (tests). Either way troupe needs SIGCHLD not to be ignored
// (SIG_IGN makes the kernel reap children itself; waits then fail with
// TR_ECHILD), and no other code may reap troupe's children
// (waitpid(-1) elsewhere in the process would).
//
// Ownership. tr_process_spawn returns a handle that must be freed with
// tr_process_free, before its runtime is freed. Freeing a handle whose
// child has not been reaped does not kill the child (send it a signal first
// if that is what you want) and does not leave a zombie: the child goes to
// a process-wide orphan list, and troupe reaps it when it exits, woken by
// the reactor of the runtime it was spawned from (its pidfd, or SIGCHLD in
// the fallback). If that runtime is freed while the orphan still runs, the
// orphan is reaped the next time any runtime spawns or frees a child (or
// at the next SIGCHLD another runtime handles): until then it may stay a
// zombie once it exits.
#ifndef TROUPE_PROCESS_H
#define TROUPE_PROCESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/io.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

typedef struct tr_process tr_process;

// What a standard stream of the child is connected to.
typedef enum tr_stdio {
    TR_STDIO_INHERIT = 0, // the parent's own descriptor (0, 1 or 2)
    TR_STDIO_NULL = 1,    // /dev/null
    TR_STDIO_PIPE = 2,    // a pipe; the parent's end is a tr_io (tr_process_take_stdio)
} tr_stdio;

// tr_process_opts flags.
enum {
    // Search PATH for file when it has no slash (posix_spawnp; the search
    // uses the parent's PATH, not envp's).
    TR_PROCESS_SEARCH_PATH = 1u << 0,
    // Start the child in a new process group (its pid is the group id), so
    // that kill(-pid, sig) reaches its own children too.
    TR_PROCESS_NEW_PGROUP = 1u << 1,
    // Start the child in a new session (setsid: POSIX_SPAWN_SETSID): it is
    // the leader of the session and of a new process group, both with its
    // pid as id, and has no controlling terminal. Not with
    // TR_PROCESS_NEW_PGROUP (TR_EINVAL): a session leader's group is new
    // already, and glibc 2.36 fails that pair with EPERM.
    TR_PROCESS_NEW_SESSION = 1u << 2,
};

// How to start a child. Zero it, then set at least argv.
typedef struct tr_process_opts {
    const char *file;  // the program; NULL: argv[0]
    char *const *argv; // NULL-terminated; argv[0] is the program's name
    char *const *envp; // NULL-terminated environment; NULL: the parent's
    const char *cwd;   // working directory; NULL: the parent's
    tr_stdio stdio[3]; // stdin, stdout, stderr (zero: inherit)
    unsigned flags;    // TR_PROCESS_*
    // A cgroup v2 directory the child starts in (NULL: the parent's):
    // clone3(CLONE_INTO_CGROUP), so it runs no instruction outside it and
    // nothing it forks escapes it. A kernel without clone3 (before 5.7)
    // gets posix_spawn, then the child's pid written to cgroup.procs: the
    // child's first instructions (a fork among them) may then run outside.
    // An error opening or entering it fails the spawn (nothing runs).
    const char *cgroup;
} tr_process_opts;

// How a child ended.
typedef struct tr_exit_status {
    int code;   // the exit code (0..255) when it exited, else -1
    int signal; // the signal that killed it, else 0
    bool core;  // it dumped core
} tr_exit_status;

// tr_process_spawn starts a child (see the header comment) for runtime rt
// and stores its handle in *out. Any thread. Errors: TR_EINVAL for bad
// options; TR_ENOENT, TR_EPERM (EACCES too), ... when the program cannot be
// started (nothing is left behind then); TR_EMFILE and other system errors
// from pipe2 or posix_spawn.
TR_API tr_err tr_process_spawn(tr_rt *rt, const tr_process_opts *opts, tr_process **out);

// tr_process_pid returns the child's process id.
TR_API pid_t tr_process_pid(const tr_process *p);

// tr_process_take_stdio hands over the parent's end of the child's stream
// fd (0, 1 or 2): the caller owns the returned tr_io (tr_io_release or
// tr_io_close it; closing the stdin pipe is how the child sees end of
// file). NULL when that stream is not a pipe or was taken already. Pipe
// ends nobody took are closed by tr_process_free.
TR_API tr_io *tr_process_take_stdio(tr_process *p, int fd);

// tr_process_wait waits for the child to exit: TR_READY with *err TR_OK
// and *st filled, or *err TR_ECHILD when the child was reaped by someone
// else; TR_PENDING otherwise. Once reaped, later waits return the same
// status at once. A leaf operation: charges the budget. One task at a time
// per process. Cancel-safe: the handle holds the wait's state, so a task
// cancelled at this await loses nothing (its drop function frees or keeps
// the handle as it likes).
TR_API tr_poll tr_process_wait(tr_process *p, tr_cx *cx, tr_exit_status *st, tr_err *err);

// tr_process_try_wait reaps the child if it has exited, without blocking:
// TR_OK with *st, TR_EAGAIN while it runs, TR_ECHILD. Any thread.
TR_API tr_err tr_process_try_wait(tr_process *p, tr_exit_status *st);

// tr_process_wait_blocking blocks the calling thread until the child exits,
// then fills *st. Not from a worker thread of any runtime: there it returns
// TR_EDEADLOCK at once. TR_ECHILD as tr_process_wait.
TR_API tr_err tr_process_wait_blocking(tr_process *p, tr_exit_status *st);

// tr_process_kill sends signal sig to the child (pidfd_send_signal, or kill
// in the fallback), never to a process that reused its pid: TR_ECHILD once
// the child has been reaped. A child that exited but is not yet reaped
// ignores it (TR_OK). Any thread.
TR_API tr_err tr_process_kill(tr_process *p, int sig);

// tr_process_free releases the handle and the stream pipes nobody took. A
// child that was not reaped yet is reaped by troupe later (see the header
// comment). Any thread, once no task waits on p; before tr_rt_free of the
// handle's runtime.
TR_API void tr_process_free(tr_process *p);

TR_END_DECLS

#endif
