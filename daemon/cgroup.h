// cgroup.h: where trouped puts its jobs' cgroups. With a writable cgroup v2
// directory, each job runs in a cgroup of its own below it (the process
// actor makes it: troupe/proc_actor.h), so cancel, timeout and the end of
// a job's leader kill everything the job started, a grandchild that made a
// session of its own included; without one, a job is its session only
// (and such a grandchild survives its job). Internal to the daemon (trd_).
#ifndef TRD_CGROUP_H
#define TRD_CGROUP_H

#include <stdbool.h>
#include <stddef.h>

// trd_cgroup_setup picks the parent of the jobs' cgroups for mode: "none"
// (no cgroups), "auto" (the default: trouped's own cgroup when it may make
// cgroups below it, as under systemd with Delegate=yes or as root, else
// none), or a directory (which must be a writable cgroup v2 directory).
// It makes the parent, trouped-<pid>, below that, and removes the empty
// trouped-<pid> directories that dead trouped processes left there. true
// and the parent's path in out ("" for none); false (an explicit directory
// that will not do) with err saying why. Blocks (a few small file
// operations). At start-up, one thread.
bool trd_cgroup_setup(const char *mode, char *out, size_t outlen, char *err, size_t errlen);

// trd_cgroup_cleanup removes the parent trd_cgroup_setup made (once every
// job's cgroup below it is gone; a failure is left for the next start).
void trd_cgroup_cleanup(const char *parent);

#endif
