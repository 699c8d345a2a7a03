// Design notes.
//
// trouped's own cgroup comes from /proc/self/cgroup (the "0::" line of the
// unified hierarchy) below the cgroup2 mount found in /proc/self/mounts.
// Creating child cgroups of the cgroup we live in is allowed in cgroup v2
// as long as no controller is enabled for them (the no-internal-process
// rule only binds domains with controllers), which is what trouped needs:
// membership and cgroup.kill, no resource control. A directory counts as
// usable when a trouped-<pid> directory can be made in it and that
// directory's cgroup.procs is writable.
#define _GNU_SOURCE
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <mntent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <troupe/proc_actor.h>

// self_cgroup writes the directory of our own cgroup v2 into out.
static bool
self_cgroup(char *out, size_t n)
{
    char mnt[4096] = "";
    FILE *f = setmntent("/proc/self/mounts", "r");
    if (f == NULL) {
        return false;
    }
    struct mntent *me;
    while ((me = getmntent(f)) != NULL) {
        if (strcmp(me->mnt_type, "cgroup2") == 0) {
            snprintf(mnt, sizeof mnt, "%s", me->mnt_dir);
            break;
        }
    }
    endmntent(f);
    if (mnt[0] == '\0' || (f = fopen("/proc/self/cgroup", "re")) == NULL) {
        return false;
    }
    char line[4096];
    bool ok = false;
    while (!ok && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            const char *rel = line + 3;
            ok = snprintf(out, n, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel) < (int)n;
        }
    }
    fclose(f);
    return ok;
}

// sweep removes the empty trouped-<pid> directories of dead trouped
// processes below base.
static void
sweep(const char *base)
{
    DIR *d = opendir(base);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, "trouped-", 8) != 0) {
            continue;
        }
        long pid = strtol(e->d_name + 8, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == (long)getpid() ||
            !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            continue;
        }
        char path[4096 + 2 + 256];
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        // Its jobs' cgroups first (empty once their processes are dead:
        // the orphan sweep at start killed them).
        DIR *sub = opendir(path);
        if (sub != NULL) {
            struct dirent *c;
            while ((c = readdir(sub)) != NULL) {
                if (strncmp(c->d_name, "troupe-", 7) == 0) {
                    char cp[sizeof path + 2 + 256];
                    snprintf(cp, sizeof cp, "%s/%s", path, c->d_name);
                    rmdir(cp);
                }
            }
            closedir(sub);
        }
        rmdir(path);
    }
    closedir(d);
}

// make_parent makes base/trouped-<pid> and checks that processes can be
// put in it.
static bool
make_parent(const char *base, char *out, size_t n)
{
    if (snprintf(out, n, "%s/trouped-%d", base, (int)getpid()) >= (int)n) {
        return false;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        return false;
    }
    char procs[4300];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", out);
    if (access(procs, W_OK) != 0) {
        rmdir(out);
        return false;
    }
    return true;
}

bool
trd_cgroup_setup(const char *mode, char *out, size_t outlen, char *err, size_t errlen)
{
    out[0] = '\0';
    if (errlen > 0) {
        err[0] = '\0';
    }
    if (mode == NULL || mode[0] == '\0') {
        mode = "auto";
    }
    if (strcmp(mode, "none") == 0) {
        return true;
    }
    char base[4096];
    if (strcmp(mode, "auto") == 0) {
        if (!self_cgroup(base, sizeof base)) {
            return true; // no cgroup v2 here: none
        }
    } else {
        snprintf(base, sizeof base, "%s", mode);
    }
    sweep(base);
    if (make_parent(base, out, outlen)) {
        return true;
    }
    int e = errno;
    out[0] = '\0';
    if (strcmp(mode, "auto") == 0) {
        return true; // not allowed to make cgroups: none
    }
    snprintf(err, errlen, "cgroup %s: cannot make a cgroup v2 directory for jobs there: %s", mode,
             strerror(e));
    return false;
}

void
trd_cgroup_cleanup(const char *parent)
{
    if (parent != NULL && parent[0] != '\0') {
        tr_proc_cgroup_release(parent); // the jobs' cgroups kept for reuse
        rmdir(parent);
    }
}
