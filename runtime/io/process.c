// Design notes.
//
// Spawning. On x86-64, clone3 with CLONE_VM | CLONE_VFORK on a stack of
// its own (spawn_vfork), whose child makes raw system calls only: what
// glibc's posix_spawn does with clone, minus its fresh stack per spawn
// (an mmap and a munmap, whose TLB shootdown is an IPI to every CPU that
// runs one of our threads: ~140 us a spawn against ~70, and a tail near
// 1 ms, on the 2-core VM); our stacks are kept (vf_stack_get). The child
// empties its signal mask (a worker or a daemon's main may block
// signals), resets the signals troupe handles (SIGPIPE and SIGXFSZ) to
// their defaults, makes its session or group (setsid alone: glibc 2.36
// fails SETSID with SETPGROUP with EPERM, since setpgid after setsid is
// refused to a session leader), dup2s the pipes, marks every other
// descriptor close-on-exec (close_range), changes directory, and execs,
// searching PATH as execvp does; a failure before or at the exec comes
// back as the spawn's error. Elsewhere, without clone3, or with the test
// switch: posix_spawn with the same attributes (POSIX_SPAWN_SETSIGMASK,
// POSIX_SPAWN_SETSIGDEF, SETSID or SETPGROUP, file actions with
// addclosefrom_np(3)).
// Pipes are made with pipe2(O_CLOEXEC), so a spawn running concurrently on
// another thread never inherits them; the child's ends are dup2'd onto
// 0..2 (dup2 clears close-on-exec on the copy). Every end we keep is moved
// above 2 first, so that a dup2 never overwrites another end and
// tr_io_open never takes one of ours for a borrowed standard stream. The
// parent's ends become tr_io objects before the spawn (nothing to undo in
// a running child if that fails).
//
// Into a cgroup (tr_process_opts.cgroup): clone3 with CLONE_INTO_CGROUP,
// so the program never runs outside it: the vfork kind above on x86-64;
// elsewhere fork-like (spawn_into_cgroup), which copies the caller's page
// tables: ~4 ms a job in trouped, against ~0.1 ms. Without clone3,
// posix_spawn and a write to cgroup.procs.
//
// Reaping. With a pidfd (the default) the handle owns the pidfd as a tr_io,
// and a wait is an ordinary readiness operation on it: waitid(P_PIDFD,
// WNOHANG), EAGAIN until the child has exited. Without one (ENOSYS, or the
// test switch) the handle owns a tr_signal on SIGCHLD and a wait alternates
// waitpid(pid, WNOHANG) with waiting for the next SIGCHLD; the tr_signal's
// snapshot is taken before the first waitpid, so an exit between the two is
// never missed. waitpid(pid) is safe because the pid cannot be reused until
// we reap it, and p_lock orders every reap against every kill(pid): a kill
// never reaches a process that reused a reaped child's pid.
//
// Orphans. A handle freed before its child was reaped moves the child (pid,
// and pidfd tr_io if any) to a process-wide list under g_orph_lock. The
// list is swept (WNOHANG for each orphan) by a waker with static storage,
// g_reaper: it is registered on each orphan's pidfd, or, in the fallback,
// through a SIGCHLD tr_signal that each runtime's process state owns
// (pr_chld), on that runtime's signal eventfd. Because the waker's data is
// static, a stale registration left in a waiter queue (a registration is
// never withdrawn) is harmless: it just triggers a sweep. The sweep re-arms
// what still runs, and repeats while an arm finds the orphan's source
// already ready again. Releasing an orphan's pidfd during a sweep wakes the
// reaper re-entrantly (the waiter queue is flushed on close): t_sweeping
// makes that a no-op. When a runtime is freed, its orphans give up their
// pidfd (the reactor goes away) and stay on the list as bare pids, reaped
// by later sweeps (tr_process_spawn, tr_process_free, another runtime's
// SIGCHLD or pidfd events).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <troupe/io.h>
#include <troupe/process.h>
#include <troupe/signal.h>

#include "exec/exec.h"
#include "io/io.h"
#include "reactor/reactor.h"

extern char **environ;

// The per-runtime state (a runtime-local slot).
typedef struct proc_rt {
    tr_rt *pr_rt;
    // SIGCHLD listener that wakes the reaper for this runtime's fallback
    // orphans. Under g_orph_lock (set up lazily, dropped at fini).
    tr_signal pr_chld;
    bool pr_chld_on;
} proc_rt;

struct tr_process {
    tr_rt *p_rt;
    proc_rt *p_pr;
    pid_t p_pid;
    // Guards p_reaped, p_err and p_status, and orders reaps against kills.
    tr__mutex p_lock;
    bool p_reaped;           // under p_lock: no more waitpid or kill
    tr_err p_err;            // under p_lock: TR_OK or why no status
    tr_exit_status p_status; // under p_lock, once p_reaped
    tr_io *p_pidio;          // the pidfd, or NULL (fallback)
    tr_signal p_sig;         // fallback: SIGCHLD, for one waiting task
    tr_io *p_stdio[3];       // the parent's pipe ends not taken yet
};

// ---------------------------------------------------------------------------
// pidfd availability.

// Set once pidfd_open said ENOSYS: never try again.
static _Atomic bool g_no_pidfd;
// Test switch (tr__process_force_fallback).
static _Atomic bool g_force_fallback;

static bool
want_pidfd(void)
{
    if (atomic_load_explicit(&g_no_pidfd, memory_order_relaxed) ||
        atomic_load_explicit(&g_force_fallback, memory_order_relaxed)) {
        return false;
    }
    const char *e = getenv("TROUPE_PROCESS_NO_PIDFD");
    return e == NULL || e[0] == '\0' || strcmp(e, "0") == 0;
}

// pidfd_open_sys opens a non-blocking pidfd (PIDFD_NONBLOCK, Linux 5.10;
// before it, pidfd_open refuses the flag and fcntl sets it).
static int
pidfd_open_sys(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, O_NONBLOCK);
    if (fd < 0 && errno == EINVAL) {
        fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd >= 0 && fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
    return fd;
#else
    errno = ENOSYS;
    return -1;
#endif
}

static int
pidfd_signal_sys(int fd, int sig)
{
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
#else
    (void)fd;
    (void)sig;
    errno = ENOSYS;
    return -1;
#endif
}

// fd_high moves a new descriptor of ours above the standard streams,
// keeping close-on-exec (see the design notes).
static int
fd_high(int fd)
{
    if (fd < 0 || fd > 2) {
        return fd;
    }
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

// chld_init starts listening to SIGCHLD for rt, in whichever mode the
// program uses for it.
static tr_err
chld_init(tr_signal *sig, tr_rt *rt)
{
    tr_err err = tr_signal_init(sig, rt, SIGCHLD, 0);
    if (err == TR_EBUSY) {
        err = tr_signal_init(sig, rt, SIGCHLD, TR_SIGNAL_SIGNALFD);
    }
    return err;
}

// ---------------------------------------------------------------------------
// Reaping one child.

static void
status_from_wait(int ws, tr_exit_status *st)
{
    if (WIFEXITED(ws)) {
        *st = (tr_exit_status){.code = WEXITSTATUS(ws), .signal = 0, .core = false};
    } else if (WIFSIGNALED(ws)) {
        *st = (tr_exit_status){.code = -1, .signal = WTERMSIG(ws), .core = WCOREDUMP(ws) != 0};
    } else {
        *st = (tr_exit_status){.code = -1, .signal = 0, .core = false};
    }
}

static void
status_from_info(const siginfo_t *si, tr_exit_status *st)
{
    switch (si->si_code) {
    case CLD_EXITED:
        *st = (tr_exit_status){.code = si->si_status, .signal = 0, .core = false};
        break;
    case CLD_DUMPED:
        *st = (tr_exit_status){.code = -1, .signal = si->si_status, .core = true};
        break;
    default: // CLD_KILLED
        *st = (tr_exit_status){.code = -1, .signal = si->si_status, .core = false};
        break;
    }
}

// reap_once tries to reap a child without blocking: 1 when it was reaped
// (*st filled) or cannot be (*err set), 0 while it runs. pidfd: the child's
// pidfd, or -1 to use waitpid(pid).
static int
reap_once(pid_t pid, int pidfd, tr_exit_status *st, tr_err *err)
{
    for (;;) {
        if (pidfd >= 0) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            int r = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG);
            if (r == 0 && si.si_pid == 0) {
                return 0;
            }
            if (r == 0) {
                status_from_info(&si, st);
                *err = TR_OK;
                return 1;
            }
        } else {
            int ws = 0;
            pid_t r = waitpid(pid, &ws, WNOHANG);
            if (r == 0) {
                return 0;
            }
            if (r > 0) {
                status_from_wait(ws, st);
                *err = TR_OK;
                return 1;
            }
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            return 0; // a non-blocking pidfd says "still running" this way
        }
        *err = errno == ECHILD ? TR_ECHILD : tr__errno(errno);
        return 1;
    }
}

// reap_locked: reap_once for a handle. Under p_lock.
static bool
reap_locked(tr_process *p)
{
    if (p->p_reaped) {
        return true;
    }
    int pidfd = p->p_pidio != NULL ? tr_io_fd(p->p_pidio) : -1;
    if (reap_once(p->p_pid, pidfd, &p->p_status, &p->p_err)) {
        p->p_reaped = true;
    }
    return p->p_reaped;
}

static bool
try_reap(tr_process *p)
{
    tr__mutex_lock(&p->p_lock);
    bool done = reap_locked(p);
    tr__mutex_unlock(&p->p_lock);
    return done;
}

// result hands out the status of a reaped child.
static tr_err
result(tr_process *p, tr_exit_status *st)
{
    tr__mutex_lock(&p->p_lock);
    TR__ASSERT(p->p_reaped);
    tr_err err = p->p_err;
    if (err == TR_OK && st != NULL) {
        *st = p->p_status;
    }
    tr__mutex_unlock(&p->p_lock);
    return err;
}

// ---------------------------------------------------------------------------
// Orphans (see the design notes).

typedef struct orphan {
    struct orphan *o_next;
    pid_t o_pid;
    tr_io *o_pidio; // NULL: fallback, or its runtime is gone
    proc_rt *o_pr;  // NULL once its runtime is gone
} orphan;

static pthread_mutex_t g_orph_lock = PTHREAD_MUTEX_INITIALIZER;
static orphan *g_orphans;         // under g_orph_lock
static _Atomic size_t g_norphans; // written under g_orph_lock; read anywhere
// Set while this thread sweeps (holds g_orph_lock).
static __thread bool t_sweeping;

static void reaper_wake(const tr_waker *w);
static const tr_waker_ops g_reaper_ops = {.wake = reaper_wake};
static const tr_waker g_reaper = {.ops = &g_reaper_ops, .data = &g_orphans};

static bool
orphan_reap(orphan *o)
{
    tr_exit_status st;
    tr_err err;
    return reap_once(o->o_pid, o->o_pidio != NULL ? tr_io_fd(o->o_pidio) : -1, &st, &err) != 0;
}

// orphan_arm registers the reaper for o's exit; false when o's source was
// ready again already (sweep once more). ready: o's pidfd readiness read
// before the reap attempt that found o running.
static bool
orphan_arm(orphan *o, uint64_t ready)
{
    if (o->o_pr == NULL) {
        return true; // nothing to watch: later sweeps reap it
    }
    if (o->o_pidio != NULL) {
        tr_io_clear_ready(o->o_pidio, TR_IO_READ,
                          (uint32_t)((ready & TR__RD_TICK_MASK) >> TR__RD_TICK_SHIFT));
        return tr__io_wait(o->o_pidio, TR_IO_READ, g_reaper);
    }
    if (o->o_pr->pr_chld_on) {
        uint64_t n;
        return !tr__signal_poll(&o->o_pr->pr_chld, g_reaper, &n);
    }
    return true;
}

// sweep_locked reaps every orphan that has exited and arms the reaper for
// the others. Under g_orph_lock, with t_sweeping set.
static void
sweep_locked(void)
{
    bool again = true;
    while (again) {
        again = false;
        orphan **pp = &g_orphans;
        while (*pp != NULL) {
            orphan *o = *pp;
            uint64_t ready = 0;
            if (o->o_pidio != NULL) {
                ready = tr__io_ready(o->o_pidio);
            }
            if (orphan_reap(o)) {
                *pp = o->o_next;
                if (o->o_pidio != NULL) {
                    tr_io_release(o->o_pidio); // re-enters reaper_wake: a no-op
                }
                tr__free(o, sizeof(*o));
                atomic_fetch_sub_explicit(&g_norphans, 1, memory_order_relaxed);
                continue;
            }
            if (!orphan_arm(o, ready)) {
                again = true;
            }
            pp = &o->o_next;
        }
    }
}

static void
sweep(void)
{
    pthread_mutex_lock(&g_orph_lock);
    t_sweeping = true;
    sweep_locked();
    t_sweeping = false;
    pthread_mutex_unlock(&g_orph_lock);
}

static void
reaper_wake(const tr_waker *w)
{
    (void)w;
    if (t_sweeping) {
        return; // our own sweep released a pidfd: it re-arms everything
    }
    sweep();
}

// orphan_add takes over a child whose handle is freed unreaped.
static void
orphan_add(proc_rt *pr, pid_t pid, tr_io *pidio)
{
    orphan *o = tr__zalloc(sizeof(*o));
    o->o_pid = pid;
    o->o_pidio = pidio;
    o->o_pr = pr;
    pthread_mutex_lock(&g_orph_lock);
    t_sweeping = true;
    if (pidio == NULL && !pr->pr_chld_on) {
        // Before the sweep's first waitpid (see the design notes). On
        // failure later sweeps still reap it.
        pr->pr_chld_on = chld_init(&pr->pr_chld, pr->pr_rt) == TR_OK;
    }
    o->o_next = g_orphans;
    g_orphans = o;
    atomic_fetch_add_explicit(&g_norphans, 1, memory_order_relaxed);
    sweep_locked();
    t_sweeping = false;
    pthread_mutex_unlock(&g_orph_lock);
}

// ---------------------------------------------------------------------------
// The per-runtime state.

static void
pr_fini(tr_rt *rt, void *ext)
{
    (void)rt;
    proc_rt *pr = ext;
    pthread_mutex_lock(&g_orph_lock);
    t_sweeping = true;
    // The reactor goes away after us: our orphans keep only their pid.
    for (orphan *o = g_orphans; o != NULL; o = o->o_next) {
        if (o->o_pr == pr) {
            if (o->o_pidio != NULL) {
                tr_io_release(o->o_pidio);
                o->o_pidio = NULL;
            }
            o->o_pr = NULL;
        }
    }
    if (pr->pr_chld_on) {
        tr_signal_fini(&pr->pr_chld);
        pr->pr_chld_on = false;
    }
    sweep_locked();
    t_sweeping = false;
    pthread_mutex_unlock(&g_orph_lock);
    tr__free(pr, sizeof(*pr));
}

// The runtime-local slot of processes: one key per process.
static tr_rt_key proc_key_v;
static pthread_once_t proc_key_once = PTHREAD_ONCE_INIT;

static void
proc_key_init(void)
{
    if (tr_rt_key_create(&proc_key_v, pr_fini) != TR_OK) {
        tr__panic("no runtime-local key left for processes");
    }
}

static tr_rt_key
proc_key(void)
{
    pthread_once(&proc_key_once, proc_key_init);
    return proc_key_v;
}

static proc_rt *
pr_get(tr_rt *rt)
{
    proc_rt *pr = tr_rt_local_get(rt, proc_key());
    if (pr != NULL) {
        return pr;
    }
    // The SIGCHLD fallback listens through signal.c: its slot first, so
    // that it outlives ours at tr_rt_free. (If it cannot be created, a
    // spawn that needs the fallback fails with the same error later.)
    (void)tr__signal_rt_ensure(rt);
    pr = tr__zalloc(sizeof(*pr));
    pr->pr_rt = rt;
    proc_rt *won = tr_rt_local_set(rt, proc_key(), pr);
    if (won != pr) {
        tr__free(pr, sizeof(*pr));
    }
    return won;
}

// ---------------------------------------------------------------------------
// Spawning.

static void
close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
}

static void
process_discard(tr_process *p)
{
    for (int i = 0; i < 3; i++) {
        if (p->p_stdio[i] != NULL) {
            tr_io_close(p->p_stdio[i]);
        }
    }
    tr_signal_fini(&p->p_sig);
    tr__free(p, sizeof(*p));
}

// spawn_sigdef fills def with the signals a child gets back at their
// defaults: SIGPIPE and SIGXFSZ (a daemon ignores them), and those troupe
// handles.
static void
spawn_sigdef(sigset_t *def)
{
    sigemptyset(def);
    sigaddset(def, SIGPIPE);
    sigaddset(def, SIGXFSZ);
    tr__signal_handled(def);
}

// Set once clone3 turned out to be missing (ENOSYS): posix_spawn from then on.
static _Atomic bool g_no_clone3;

// do_spawn runs posix_spawn with the child's ends in child_fd (-1: not a
// pipe). Returns 0 or an errno.
static int
do_spawn(const tr_process_opts *o, const int child_fd[3], pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int e = posix_spawn_file_actions_init(&fa);
    if (e != 0) {
        return e;
    }
    e = posix_spawnattr_init(&attr);
    if (e != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return e;
    }
    for (int i = 0; i < 3 && e == 0; i++) {
        if (o->stdio[i] == TR_STDIO_PIPE) {
            e = posix_spawn_file_actions_adddup2(&fa, child_fd[i], i);
        } else if (o->stdio[i] == TR_STDIO_NULL) {
            e = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY,
                                                 0);
        }
    }
    if (e == 0) {
        e = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    }
    if (e == 0 && o->cwd != NULL) {
        e = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    }
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o->flags & TR_PROCESS_NEW_PGROUP) {
        flags |= POSIX_SPAWN_SETPGROUP;
    }
    if (o->flags & TR_PROCESS_NEW_SESSION) {
        flags |= POSIX_SPAWN_SETSID;
    }
    sigset_t mask, def;
    sigemptyset(&mask);
    spawn_sigdef(&def);
    if (e == 0) {
        e = posix_spawnattr_setflags(&attr, flags);
    }
    if (e == 0) {
        e = posix_spawnattr_setsigmask(&attr, &mask);
    }
    if (e == 0) {
        e = posix_spawnattr_setsigdefault(&attr, &def);
    }
    if (e == 0 && (o->flags & TR_PROCESS_NEW_PGROUP)) {
        e = posix_spawnattr_setpgroup(&attr, 0);
    }
    if (e == 0) {
        const char *file = o->file != NULL ? o->file : o->argv[0];
        char *const *envp = o->envp != NULL ? o->envp : environ;
        if (o->flags & TR_PROCESS_SEARCH_PATH) {
            e = posix_spawnp(pid, file, &fa, &attr, o->argv, envp);
        } else {
            e = posix_spawn(pid, file, &fa, &attr, o->argv, envp);
        }
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return e;
}

struct trx_clone_args { // struct clone_args of linux/sched.h (v2: cgroup)
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};

#if !defined(__x86_64__)
// The child's side of spawn_into_cgroup: a forked copy of a threaded
// process, so async-signal-safe calls only; an error goes to the parent
// through ep (close-on-exec: end of file there means the exec worked).
static void __attribute__((noreturn))
child_exec(const tr_process_opts *o, const int child_fd[3], const sigset_t *def, int ep)
{
    int e = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sigismember(def, sig) == 1) {
            signal(sig, SIG_DFL);
        }
    }
    if ((o->flags & TR_PROCESS_NEW_SESSION) && setsid() < 0) {
        e = errno;
    } else if ((o->flags & TR_PROCESS_NEW_PGROUP) && setpgid(0, 0) != 0) {
        e = errno;
    }
    for (int i = 0; i < 3 && e == 0; i++) {
        if (o->stdio[i] == TR_STDIO_PIPE) {
            if (dup2(child_fd[i], i) < 0) {
                e = errno;
            }
        } else if (o->stdio[i] == TR_STDIO_NULL) {
            int fd = open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
            if (fd < 0 || (fd != i && (dup2(fd, i) < 0 || close(fd) != 0))) {
                e = errno;
            }
        }
    }
    // Whatever else is open goes at the exec (ep included).
    if (e == 0 && syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) != 0) {
        for (int fd = 3; fd < 1024; fd++) {
            if (fd != ep) {
                close(fd);
            }
        }
    }
    if (e == 0 && o->cwd != NULL && chdir(o->cwd) != 0) {
        e = errno;
    }
    if (e == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        const char *file = o->file != NULL ? o->file : o->argv[0];
        char *const *envp = o->envp != NULL ? o->envp : environ;
        if (o->flags & TR_PROCESS_SEARCH_PATH) {
            execvpe(file, o->argv, envp);
        } else {
            execve(file, o->argv, envp);
        }
        e = errno;
    }
    (void)!write(ep, &e, sizeof e);
    _exit(127);
}

// spawn_into_cgroup starts the child in o->cgroup: clone3 with
// CLONE_INTO_CGROUP (fork-like: no shared memory, so the child may run C
// until its exec), every signal blocked around it so that no handler runs
// in the child before the defaults are back. 0, ENOSYS (no clone3: the
// caller falls back), or an errno.
static int
spawn_into_cgroup(const tr_process_opts *o, const int child_fd[3], const sigset_t *def, pid_t *pid)
{
    int cg = open(o->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0) {
        return errno;
    }
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) != 0) {
        int e = errno;
        close(cg);
        return e;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct trx_clone_args ca = {.flags = 0x200000000ull /* CLONE_INTO_CGROUP */,
                                .exit_signal = SIGCHLD,
                                .cgroup = (uint64_t)cg};
    long r = syscall(SYS_clone3, &ca, sizeof ca);
    if (r == 0) {
        close(ep[0]);
        child_exec(o, child_fd, def, ep[1]);
    }
    int e = r < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(cg);
    close(ep[1]);
    if (r > 0) {
        int ce = 0;
        ssize_t n;
        do {
            n = read(ep[0], &ce, sizeof ce);
        } while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof ce) {
            // It never ran the program: reap it here, report why.
            while (waitpid((pid_t)r, NULL, 0) < 0 && errno == EINTR) {
            }
            e = ce != 0 ? ce : EIO;
        } else {
            *pid = (pid_t)r;
        }
    }
    close(ep[0]);
    return e;
}
#endif

#if defined(__x86_64__)
// The vfork way into a cgroup (x86-64): clone3 with CLONE_VM | CLONE_VFORK
// | CLONE_INTO_CGROUP on a stack of its own, as glibc's posix_spawn does
// with clone. The fork-like clone3 above copies the whole address space,
// and the parent then waits on the error pipe for the child to exec:
// measured here, about 4 ms a job for trouped (its page tables are big),
// against about 0.1 ms for posix_spawn. Sharing memory, the child must not
// touch anything the parent's other threads may hold (no malloc, no locks,
// no sanitizer interceptors): it makes raw system calls only, on what the
// parent prepared, and leaves an error in vf_err (the parent sleeps until
// the exec or the exit, so the write is seen when it wakes).
typedef struct vfork_args {
    const tr_process_opts *vf_o;
    const int *vf_child_fd;
    uint64_t vf_def;      // the signals to reset to SIG_DFL (kernel mask)
    const char *vf_path;  // PATH for a search (the parent's, as execvp)
    const char *vf_file;  // what to run
    char *const *vf_envp; // its environment
    volatile int vf_err;  // what failed in the child (0: it ran exec)
} vfork_args;

struct trx_ksigaction { // the kernel's struct sigaction (x86-64)
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

#define VF_NOSAN __attribute__((no_sanitize("address", "thread", "undefined"), noinline))

static VF_NOSAN long
vf_sys(long nr, long a, long b, long c, long d)
{
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

// vf_exec returns only when the exec failed: its errno. (vf_err is set
// only once the child gives up, since the exec that works leaves it as it
// is for the parent to read.)
static VF_NOSAN int
vf_exec(vfork_args *a, const char *path)
{
    return (int)-vf_sys(SYS_execve, (long)path, (long)a->vf_o->argv, (long)a->vf_envp, 0);
}

// vf_child runs in the child, on its own stack; it never returns.
static VF_NOSAN int
vf_child(void *arg)
{
    vfork_args *a = arg;
    const tr_process_opts *o = a->vf_o;
    long r = 0;
    for (int sig = 1; sig < 65; sig++) {
        if (a->vf_def & (1ull << (sig - 1))) {
            struct trx_ksigaction ks = {0};
            vf_sys(SYS_rt_sigaction, sig, (long)&ks, 0, 8);
        }
    }
    if (o->flags & TR_PROCESS_NEW_SESSION) {
        r = vf_sys(SYS_setsid, 0, 0, 0, 0);
    } else if (o->flags & TR_PROCESS_NEW_PGROUP) {
        r = vf_sys(SYS_setpgid, 0, 0, 0, 0);
    }
    for (int i = 0; i < 3 && r >= 0; i++) {
        if (o->stdio[i] == TR_STDIO_PIPE) {
            r = vf_sys(SYS_dup2, a->vf_child_fd[i], i, 0, 0);
        } else if (o->stdio[i] == TR_STDIO_NULL) {
            static const char dev_null[] = "/dev/null";
            long fd = vf_sys(SYS_openat, AT_FDCWD, (long)dev_null, i == 0 ? O_RDONLY : O_WRONLY, 0);
            r = fd;
            if (fd >= 0 && fd != i) {
                r = vf_sys(SYS_dup2, fd, i, 0, 0);
                vf_sys(SYS_close, fd, 0, 0, 0);
            }
        }
    }
    if (r >= 0 && vf_sys(SYS_close_range, 3, ~0u, 4 /* CLOSE_RANGE_CLOEXEC */, 0) < 0) {
        for (long fd = 3; fd < 1024; fd++) {
            vf_sys(SYS_close, fd, 0, 0, 0);
        }
    }
    if (r >= 0 && o->cwd != NULL) {
        r = vf_sys(SYS_chdir, (long)o->cwd, 0, 0, 0);
    }
    if (r < 0) {
        a->vf_err = (int)-r;
        vf_sys(SYS_exit, 127, 0, 0, 0);
    }
    uint64_t none = 0;
    vf_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);
    const char *f = a->vf_file;
    bool search = (o->flags & TR_PROCESS_SEARCH_PATH) && a->vf_path != NULL;
    for (const char *c = f; search && *c != '\0'; c++) {
        search = *c != '/';
    }
    int err = ENOENT;
    if (!search) {
        err = vf_exec(a, f);
    } else {
        // As execvp: each PATH entry ("" is the current directory); EACCES
        // is kept if nothing else is found, ENOENT and ENOTDIR go on.
        char buf[4096];
        size_t fl = 0;
        while (f[fl] != '\0') {
            fl++;
        }
        bool eacces = false;
        const char *p = a->vf_path;
        for (;;) {
            const char *e = p;
            while (*e != '\0' && *e != ':') {
                e++;
            }
            size_t dl = (size_t)(e - p);
            if (dl + fl + 2 <= sizeof buf) {
                size_t n = 0;
                for (size_t k = 0; k < dl; k++) {
                    buf[n++] = p[k];
                }
                if (dl > 0) {
                    buf[n++] = '/';
                }
                for (size_t k = 0; k <= fl; k++) {
                    buf[n++] = f[k];
                }
                err = vf_exec(a, buf);
                if (err == EACCES) {
                    eacces = true;
                } else if (err != ENOENT && err != ENOTDIR) {
                    break;
                }
            }
            if (*e == '\0') {
                err = eacces ? EACCES : ENOENT;
                break;
            }
            p = e + 1;
        }
    }
    a->vf_err = err != 0 ? err : EIO;
    vf_sys(SYS_exit, 127, 0, 0, 0);
    __builtin_unreachable();
}

// vf_clone3 is clone3(ca) whose child calls fn(arg) on the stack ca names
// and exits with what it returns; the parent gets the pid or -errno.
static VF_NOSAN long
vf_clone3(struct trx_clone_args *ca, int (*fn)(void *), void *arg)
{
    long r;
    register void *r12 __asm__("r12") = (void *)fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov $60, %%eax\n\t" // SYS_exit
                     "syscall\n\t"
                     "hlt\n"
                     "1:\n\t"
                     : "=a"(r)
                     : "a"((long)SYS_clone3), "D"(ca), "S"(sizeof *ca), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory");
    return r;
}

#define VF_STACK ((size_t)64 << 10)

// The child's stacks, kept for the next spawn: an mmap and a munmap per
// spawn cost a TLB shootdown (an IPI to each CPU that runs one of our
// threads, dear in a VM) and the child's page faults on fresh pages. A
// stack is free again when vf_clone3 returns: the child has exec'd or
// exited by then (CLONE_VFORK).
enum { VF_KEEP = 4 };
static pthread_mutex_t g_vf_mu = PTHREAD_MUTEX_INITIALIZER;
static void *g_vf_stk[VF_KEEP];
static int g_vf_n;

static void *
vf_stack_get(void)
{
    void *s = NULL;
    pthread_mutex_lock(&g_vf_mu);
    if (g_vf_n > 0) {
        s = g_vf_stk[--g_vf_n];
    }
    pthread_mutex_unlock(&g_vf_mu);
    if (s == NULL) {
        s = mmap(NULL, VF_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                 -1, 0);
    }
    return s;
}

static void
vf_stack_put(void *s)
{
    pthread_mutex_lock(&g_vf_mu);
    bool kept = g_vf_n < VF_KEEP;
    if (kept) {
        g_vf_stk[g_vf_n++] = s;
    }
    pthread_mutex_unlock(&g_vf_mu);
    if (!kept) {
        munmap(s, VF_STACK);
    }
}

// spawn_vfork starts the child the vfork way, into o->cgroup when it is
// set (CLONE_INTO_CGROUP): 0, ENOSYS (no clone3, or no CLONE_INTO_CGROUP:
// the caller falls back), or an errno. Without a cgroup it is also what
// posix_spawn would do, minus glibc's stack per spawn (see vf_stack_get):
// ~70 us against ~140 us a spawn here, and a tail of ~0.8 ms gone.
static int
spawn_vfork(const tr_process_opts *o, const int child_fd[3], const sigset_t *def, pid_t *pid)
{
    int cg = -1;
    if (o->cgroup != NULL && (cg = open(o->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        return errno;
    }
    void *stk = vf_stack_get();
    if (stk == MAP_FAILED) {
        int e = errno;
        if (cg >= 0) {
            close(cg);
        }
        return e;
    }
    vfork_args a = {
        .vf_o = o,
        .vf_child_fd = child_fd,
        .vf_path = getenv("PATH") != NULL ? getenv("PATH") : "/bin:/usr/bin",
        .vf_file = o->file != NULL ? o->file : o->argv[0],
        .vf_envp = o->envp != NULL ? o->envp : environ,
    };
    for (int sig = 1; sig < 65 && sig < NSIG; sig++) {
        if (sigismember(def, sig) == 1) {
            a.vf_def |= 1ull << (sig - 1);
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct trx_clone_args ca = {
        .flags = (cg >= 0 ? 0x200000000ull /* CLONE_INTO_CGROUP */ : 0) | CLONE_VM | CLONE_VFORK,
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)stk,
        .stack_size = VF_STACK,
        .cgroup = cg >= 0 ? (uint64_t)cg : 0,
    };
    long r = vf_clone3(&ca, vf_child, &a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    vf_stack_put(stk);
    if (cg >= 0) {
        close(cg);
    }
    if (r < 0) {
        return (int)-r;
    }
    if (a.vf_err != 0) {
        // It never ran the program: reap it here, report why.
        while (waitpid((pid_t)r, NULL, 0) < 0 && errno == EINTR) {
        }
        return a.vf_err;
    }
    *pid = (pid_t)r;
    return 0;
}
#endif

// cgroup_enter writes pid into o->cgroup's cgroup.procs (the fallback
// without clone3). 0 or an errno.
static int
cgroup_enter(const char *cgroup, pid_t pid)
{
    char path[4200], num[32];
    snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int n = snprintf(num, sizeof num, "%d", (int)pid);
    int e = write(fd, num, (size_t)n) == n ? 0 : errno;
    close(fd);
    return e;
}

// use_clone3: spawn o with our own clone3 rather than posix_spawn, unless
// clone3 is missing or the test switch asks for posix_spawn: every spawn
// on x86-64 (spawn_vfork), elsewhere only one into a cgroup.
static bool
use_clone3(const tr_process_opts *o)
{
    if (atomic_load_explicit(&g_no_clone3, memory_order_relaxed) ||
        atomic_load_explicit(&g_force_fallback, memory_order_relaxed)) {
        return false;
    }
#if defined(__x86_64__)
    (void)o;
    return true;
#else
    return o->cgroup != NULL;
#endif
}

tr_err
tr_process_spawn(tr_rt *rt, const tr_process_opts *o, tr_process **out)
{
    if (rt == NULL || o == NULL || out == NULL || o->argv == NULL || o->argv[0] == NULL ||
        (o->flags & ~(unsigned)(TR_PROCESS_SEARCH_PATH | TR_PROCESS_NEW_PGROUP |
                                TR_PROCESS_NEW_SESSION)) != 0) {
        return TR_EINVAL;
    }
    // setsid makes a new group already; glibc refuses SETSID with SETPGROUP.
    if ((o->flags & TR_PROCESS_NEW_PGROUP) && (o->flags & TR_PROCESS_NEW_SESSION)) {
        return TR_EINVAL;
    }
    for (int i = 0; i < 3; i++) {
        if ((unsigned)o->stdio[i] > TR_STDIO_PIPE) {
            return TR_EINVAL;
        }
    }
    proc_rt *pr = pr_get(rt);
    if (atomic_load_explicit(&g_norphans, memory_order_relaxed) != 0) {
        sweep();
    }
    tr_process *p = tr__zalloc(sizeof(*p));
    p->p_rt = rt;
    p->p_pr = pr;
    tr_err err = TR_OK;
    int child_fd[3] = {-1, -1, -1};
    bool pidfd = want_pidfd();
    int e;
    for (int i = 0; i < 3; i++) {
        if (o->stdio[i] != TR_STDIO_PIPE) {
            continue;
        }
        int pp[2];
        if (pipe2(pp, O_CLOEXEC) != 0) {
            err = tr__errno(errno);
            goto fail;
        }
        pp[0] = fd_high(pp[0]);
        pp[1] = fd_high(pp[1]);
        if (pp[0] < 0 || pp[1] < 0) {
            err = tr__errno(errno);
            close_fds(pp, 2);
            goto fail;
        }
        // stdin: the child reads; stdout/stderr: the child writes. Our end
        // alone is non-blocking (a fresh pipe has no other status flag).
        int mine = i == 0 ? pp[1] : pp[0];
        child_fd[i] = i == 0 ? pp[0] : pp[1];
        err = fcntl(mine, F_SETFL, O_NONBLOCK) == 0
                  ? tr__io_open_ours(rt, mine, true, &p->p_stdio[i])
                  : tr__errno(errno);
        if (err != TR_OK) {
            close(mine);
            goto fail;
        }
    }
    if (!pidfd) {
        err = chld_init(&p->p_sig, rt);
        if (err != TR_OK) {
            goto fail;
        }
    }
    e = ENOSYS;
    if (use_clone3(o)) {
        sigset_t def;
        spawn_sigdef(&def);
#if defined(__x86_64__)
        // (No fork-like retry on ENOSYS: that is the same clone3.)
        e = spawn_vfork(o, child_fd, &def, &p->p_pid);
#else
        e = spawn_into_cgroup(o, child_fd, &def, &p->p_pid);
#endif
        if (e == ENOSYS) {
            atomic_store_explicit(&g_no_clone3, true, memory_order_relaxed);
        }
    }
    if (e == ENOSYS) {
        e = do_spawn(o, child_fd, &p->p_pid);
        if (e == 0 && o->cgroup != NULL && (e = cgroup_enter(o->cgroup, p->p_pid)) != 0) {
            // Not where it was asked to run: it does not run at all.
            kill(p->p_pid, SIGKILL);
            while (waitpid(p->p_pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
    }
    close_fds(child_fd, 3);
    if (e != 0) {
        err = tr__errno(e);
        goto fail;
    }
    if (pidfd) {
        int fd = fd_high(pidfd_open_sys(p->p_pid));
        if (fd < 0 && errno == ENOSYS) {
            atomic_store_explicit(&g_no_pidfd, true, memory_order_relaxed);
        }
        if (fd >= 0 && tr__io_open_ours(rt, fd, false, &p->p_pidio) != TR_OK) {
            close(fd);
        }
        if (p->p_pidio == NULL) {
            // No pidfd after all: SIGCHLD. Listening only now is fine: the
            // first wait calls waitpid before it waits for a SIGCHLD.
            err = chld_init(&p->p_sig, rt);
            if (err != TR_OK) {
                // No way to learn of its exit: do not leave it running.
                kill(p->p_pid, SIGKILL);
                while (waitpid(p->p_pid, NULL, 0) < 0 && errno == EINTR) {
                }
                goto fail;
            }
        }
    }
    *out = p;
    return TR_OK;

fail:
    close_fds(child_fd, 3);
    process_discard(p);
    return err;
}

pid_t
tr_process_pid(const tr_process *p)
{
    return p->p_pid;
}

tr_io *
tr_process_take_stdio(tr_process *p, int fd)
{
    if (p == NULL || fd < 0 || fd > 2) {
        return NULL;
    }
    tr_io *io = p->p_stdio[fd];
    p->p_stdio[fd] = NULL;
    return io;
}

// ---------------------------------------------------------------------------
// Waiting.

static ssize_t
pidfd_reap(int fd, void *arg)
{
    (void)fd; // the same descriptor as tr_io_fd(p->p_pidio)
    if (!try_reap(arg)) {
        errno = EAGAIN;
        return -1;
    }
    return 0;
}

tr_poll
tr_process_wait(tr_process *p, tr_cx *cx, tr_exit_status *st, tr_err *err)
{
    if (p->p_pidio != NULL) {
        size_t n;
        if (tr_io_poll_op(p->p_pidio, cx, TR_IO_READ, pidfd_reap, p, &n, err) == TR_PENDING) {
            return TR_PENDING;
        }
        if (*err == TR_OK) {
            *err = result(p, st);
        }
        return TR_READY;
    }
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    for (;;) {
        if (try_reap(p)) {
            *err = result(p, st);
            return TR_READY;
        }
        uint64_t n;
        if (!tr__signal_poll(&p->p_sig, tr_cx_waker(cx), &n)) {
            return TR_PENDING;
        }
    }
}

tr_err
tr_process_try_wait(tr_process *p, tr_exit_status *st)
{
    if (p == NULL) {
        return TR_EINVAL;
    }
    return try_reap(p) ? result(p, st) : TR_EAGAIN;
}

tr_err
tr_process_wait_blocking(tr_process *p, tr_exit_status *st)
{
    if (p == NULL) {
        return TR_EINVAL;
    }
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    while (!try_reap(p)) {
        if (p->p_pidio != NULL) {
            // The pidfd is non-blocking (waitid would not wait): poll it.
            struct pollfd pfd = {.fd = tr_io_fd(p->p_pidio), .events = POLLIN};
            (void)poll(&pfd, 1, -1);
        } else {
            // Wait for the exit without reaping it (the reap happens under
            // p_lock, in try_reap).
            siginfo_t si;
            (void)waitid(P_PID, (id_t)p->p_pid, &si, WEXITED | WNOWAIT);
        }
    }
    return result(p, st);
}

// ---------------------------------------------------------------------------
// Signals and release.

tr_err
tr_process_kill(tr_process *p, int sig)
{
    if (p == NULL || sig < 0 || sig >= NSIG) {
        return TR_EINVAL;
    }
    tr__mutex_lock(&p->p_lock);
    if (p->p_reaped) {
        tr__mutex_unlock(&p->p_lock);
        return TR_ECHILD;
    }
    int r = p->p_pidio != NULL ? pidfd_signal_sys(tr_io_fd(p->p_pidio), sig) : kill(p->p_pid, sig);
    int e = errno;
    tr__mutex_unlock(&p->p_lock);
    if (r == 0) {
        return TR_OK;
    }
    return e == ESRCH ? TR_ECHILD : tr__errno(e);
}

void
tr_process_free(tr_process *p)
{
    if (p == NULL) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        if (p->p_stdio[i] != NULL) {
            tr_io_release(p->p_stdio[i]);
        }
    }
    if (!try_reap(p)) {
        orphan_add(p->p_pr, p->p_pid, p->p_pidio); // takes the pidfd
    } else if (p->p_pidio != NULL) {
        tr_io_release(p->p_pidio);
    }
    // After orphan_add: the SIGCHLD handler stays installed throughout.
    tr_signal_fini(&p->p_sig);
    tr__free(p, sizeof(*p));
}

// ---------------------------------------------------------------------------
// For the tests.

// tr__process_force_fallback makes later spawns use posix_spawn and
// SIGCHLD instead of the raw clone3 and a pidfd (on), or lets them try
// those again (off).
void
tr__process_force_fallback(bool on)
{
    atomic_store(&g_force_fallback, on);
}

// tr__process_has_pidfd reports whether p waits through a pidfd.
bool
tr__process_has_pidfd(const tr_process *p)
{
    return p->p_pidio != NULL;
}

// tr__process_orphans returns how many freed children await reaping.
size_t
tr__process_orphans(void)
{
    return atomic_load(&g_norphans);
}
