// orphans.h: finding and killing what a crashed trouped left running.
// A trouped killed with SIGKILL leaves its jobs' sessions behind (each job
// runs in a session of its own, so nothing kills them with it). Before a
// restarted trouped runs or retries anything, trd_orphans_kill finds every
// process of an earlier incarnation on the same state directory and kills
// its process group, so that a retry never runs beside a surviving copy.
//
// Two ways to find them, because a crash can fall between the spawn of a
// job and the commit that records its leader:
// - the leaders the store recorded (pid and start time, /proc/PID/stat
//   field 22): a pid whose start time still matches is that leader;
// - every job's environment carries TROUPE_JOB_STATE_DIR=<state dir>: any
//   process of ours whose environment has it is one of them (unless it
//   rewrote its environment: then only its recorded leader finds it).
// Internal to the daemon (trd_).
#ifndef TRD_ORPHANS_H
#define TRD_ORPHANS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// The environment variable that marks a job's processes.
#define TRD_ENV_STATE_DIR "TROUPE_JOB_STATE_DIR"
#define TRD_ENV_JOB_ID "TROUPE_JOB_ID"

typedef struct trd_leader {
    pid_t l_pid;
    uint64_t l_start; // clock ticks since boot; 0: unknown (never matches)
} trd_leader;

typedef struct trd_orphan_stats {
    size_t o_groups; // process groups killed
    size_t o_procs;  // processes waited for
    size_t o_left;   // still alive when the time ran out
} trd_orphan_stats;

// trd_orphans_kill kills (SIGKILL) the process group of each leader of
// leaders[0..n) that still runs with its recorded start time, and of every
// process of this user whose environment holds TROUPE_JOB_STATE_DIR=state_dir
// (not this process), then waits up to timeout_ms for those processes to
// exit (pidfds: no polling). Fills *st (may be NULL). Blocks. Call before
// the daemon spawns anything.
void trd_orphans_kill(const char *state_dir, const trd_leader *leaders, size_t n, int timeout_ms,
                      trd_orphan_stats *st);

#endif
