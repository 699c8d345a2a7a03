// Design notes.
//
// The loader (plugin.h) trusts a plugin only as far as the file system
// vouches for it: a plugin runs as trouped, so whoever may write the
// directory or the file could run code as trouped. Hence the rules, each
// checked with fstat on a descriptor opened with O_NOFOLLOW (a symbolic
// link is refused, never followed): the directory and every plugin are
// owned by the effective user and are not group- or world-writable. The
// library is then loaded through that same descriptor, by its
// /proc/self/fd/N path, so no rename or replacement between the check and
// the dlopen can slip another file in (no TOCTOU window). The parents of
// the directory are not checked: the operator who names it vouches for
// the path to it.
//
// glibc records /proc/self/fd/N as the loaded object's name, and a later
// dlopen of a path equal to a loaded object's name returns that object
// without opening the file. So a plugin's descriptor stays open for as
// long as the plugin is loaded (forever: plugins are never dlclosed,
// since their task specs and strings live in their images), and N never
// names another file for the rest of the process. $ORIGIN in a plugin's
// RUNPATH means /proc/self/fd, so plugins find libtroupe by the ordinary
// search (it is loaded already: trouped links it).
//
// The registry of plugin kinds (name, encoder, plugin) hangs off the
// runtime (tr_rt_local: freed with it, and one per runtime in the tests),
// is written only by trd_plugins_load on the main thread before any job or
// request can look, and read without a lock afterwards: the thread starts
// and messages that come between order the accesses. Lookups are a linear
// scan: plugins register tens of kinds, and a lookup happens once per
// Submit job and once per start.
#define _GNU_SOURCE
#include "plugin.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "request.h"
#include "trouped.h"

typedef struct pkind {
    char pk_name[TR_KIND_NAME_MAX + 1];
    tr_kind_encode_fn pk_encode;
    size_t pk_plugin; // index into p_files
} pkind;

typedef struct plugins {
    pkind *p_kinds;
    size_t p_n, p_cap;
    char **p_files; // the path of each plugin loaded, for messages
    size_t p_nfiles;
} plugins;

static tr_rt_key g_key;
static tr_err g_key_err;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static void
registry_fini(tr_rt *rt, void *value)
{
    (void)rt;
    plugins *p = value;
    for (size_t i = 0; i < p->p_nfiles; i++) {
        free(p->p_files[i]);
    }
    free(p->p_files);
    free(p->p_kinds);
    free(p);
}

static void
key_create(void)
{
    g_key_err = tr_rt_key_create(&g_key, registry_fini);
}

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n != 0 ? n : 1);
    if (q == NULL) {
        abort();
    }
    return q;
}

// registry returns rt's registry, NULL when no plugin was ever loaded.
static plugins *
registry(tr_rt *rt)
{
    pthread_once(&g_key_once, key_create);
    return g_key_err == TR_OK ? tr_rt_local_get(rt, g_key) : NULL;
}

static const pkind *
kind_find(const plugins *p, const char *name)
{
    for (size_t i = 0; p != NULL && i < p->p_n; i++) {
        if (strcmp(p->p_kinds[i].pk_name, name) == 0) {
            return &p->p_kinds[i];
        }
    }
    return NULL;
}

bool
trd_plugin_kind_known(void *rt, const char *name)
{
    return name != NULL && kind_find(registry(rt), name) != NULL;
}

tr_err
trd_plugin_spawn(tr_rt *rt, const char *name, const void *args, size_t len, tr_join *join,
                 tr_kind_encode_fn *encode)
{
    *join = TR_JOIN_NONE;
    const pkind *k = name != NULL ? kind_find(registry(rt), name) : NULL;
    if (k == NULL) {
        return TR_ENOTFOUND;
    }
    tr_err rv = tr_kind_spawn(rt, name, args, len, join);
    if (rv == TR_OK) {
        *encode = k->pk_encode;
    }
    return rv;
}

// ---------------------------------------------------------------------------
// Loading.

// What the host table's kind_register needs (host_private): the registry,
// the plugin being loaded, and where the first error's text goes.
typedef struct load_ctx {
    plugins *lc_reg;
    size_t lc_plugin; // its index in p_files
    size_t lc_first;  // its first kind in p_kinds
    char *lc_err;
    size_t lc_errlen;
    bool lc_said; // lc_err holds a kind_register error
    tr_err lc_rv; // and this was its code
} load_ctx;

static tr_err __attribute__((format(printf, 4, 5)))
fail(char *err, size_t n, tr_err rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return rv;
}

static tr_err __attribute__((format(printf, 3, 4)))
reg_fail(load_ctx *lc, tr_err rv, const char *fmt, ...)
{
    if (!lc->lc_said) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(lc->lc_err, lc->lc_errlen, fmt, ap);
        va_end(ap);
        lc->lc_said = true;
        lc->lc_rv = rv;
    }
    return rv;
}

static bool
reserved(const char *name)
{
    static const char *const names[] = {"exec", "shell", "sleep", "noop"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

static tr_err
host_kind_register(const tr_plugin_host *host, const char *name, const tr_task_spec *spec,
                   tr_kind_init_fn init_from_args, tr_kind_encode_fn encode_result)
{
    load_ctx *lc = host->host_private;
    plugins *p = lc->lc_reg;
    if (!trd_kind_name_ok(name)) {
        return reg_fail(lc, TR_EINVAL,
                        "kind_register: '%.*s' is not a kind name (1 to %d bytes of "
                        "[A-Za-z0-9_.:-])",
                        TR_KIND_NAME_MAX, name != NULL ? name : "(null)", TR_KIND_NAME_MAX);
    }
    if (reserved(name)) {
        return reg_fail(lc, TR_EPERM,
                        "kind_register: '%s' is reserved (exec, shell, sleep and noop are "
                        "trouped's own tasks)",
                        name);
    }
    if (encode_result == NULL) {
        return reg_fail(lc, TR_EINVAL,
                        "kind_register: kind '%s' has no result encoder (a plugin kind needs "
                        "one: troupe/plugin.h)",
                        name);
    }
    const pkind *dup = kind_find(p, name);
    if (dup != NULL) {
        return reg_fail(lc, TR_EEXIST, "kind_register: kind '%s' is registered already by %s", name,
                        p->p_files[dup->pk_plugin]);
    }
    tr_err rv = tr_kind_register(host->rt, name, spec, init_from_args, encode_result);
    if (rv != TR_OK) {
        // tr_kind_register says why in the thread's detail.
        return reg_fail(lc, rv, "kind_register: kind '%s': %s", name, tr_error_detail());
    }
    if (p->p_n == p->p_cap) {
        p->p_cap = p->p_cap != 0 ? p->p_cap * 2 : 16;
        p->p_kinds = xrealloc(p->p_kinds, p->p_cap * sizeof *p->p_kinds);
    }
    pkind *k = &p->p_kinds[p->p_n++];
    snprintf(k->pk_name, sizeof k->pk_name, "%s", name);
    k->pk_encode = encode_result;
    k->pk_plugin = lc->lc_plugin;
    return TR_OK;
}

// check_file says what is wrong with an opened file of the plugin
// directory (what: "plugin directory" or "plugin"), if anything.
static tr_err
check_file(int fd, bool dir, const char *path, char *err, size_t n)
{
    const char *what = dir ? "plugin directory" : "plugin";
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return fail(err, n, tr_err_from_errno(errno), "%s %s: fstat: %s", what, path,
                    strerror(errno));
    }
    if (!dir && !S_ISREG(st.st_mode)) {
        return fail(err, n, TR_EINVAL, "%s %s: not a regular file", what, path);
    }
    if (st.st_uid != geteuid()) {
        return fail(err, n, TR_EPERM,
                    "%s %s: owned by uid %u, not by trouped's user (uid %u): refused, since its "
                    "owner could run code as trouped",
                    what, path, (unsigned)st.st_uid, (unsigned)geteuid());
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return fail(err, n, TR_EPERM,
                    "%s %s: mode %04o is %s-writable: refused, since others could run code as "
                    "trouped (chmod go-w)",
                    what, path, (unsigned)(st.st_mode & 07777),
                    (st.st_mode & S_IWOTH) != 0 ? "world" : "group");
    }
    return TR_OK;
}

// open_fail words a failed open of path. A symbolic link fails with
// ELOOP (O_NOFOLLOW), or ENOTDIR with O_DIRECTORY: lstat tells which (for
// the message only; the open has refused it already).
static tr_err
open_fail(const char *what, const char *path, char *err, size_t n)
{
    int e = errno;
    struct stat lst;
    if (e == ELOOP || (e == ENOTDIR && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))) {
        return fail(err, n, TR_EINVAL,
                    "%s %s: a symbolic link (plugins are never reached through one)", what, path);
    }
    if (e == ENOTDIR) {
        return fail(err, n, TR_EINVAL, "%s %s: not a directory", what, path);
    }
    return fail(err, n, tr_err_from_errno(e), "%s %s: %s", what, path, strerror(e));
}

// kinds_text writes the kinds of plugin i ("a,b", or "none") into buf.
static void
kinds_text(const plugins *p, size_t first, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = first; i < p->p_n && k + 1 < n; i++) {
        int w = snprintf(buf + k, n - k, "%s%s", k > 0 ? "," : "", p->p_kinds[i].pk_name);
        k = w < 0 || (size_t)w >= n - k ? n - 1 : k + (size_t)w;
    }
    if (k == 0) {
        snprintf(buf, n, "none");
    }
}

// load_one checks, loads and registers the plugin name of the directory
// dfd (dir its path).
static tr_err
load_one(tr_rt *rt, plugins *p, int dfd, const char *dir, const char *name, char *err, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    // O_NONBLOCK: a FIFO named x.so must not hang the start (it is then
    // refused as no regular file).
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        return open_fail("plugin", path, err, n);
    }
    tr_err rv = check_file(fd, false, path, err, n);
    if (rv != TR_OK) {
        close(fd);
        return rv;
    }
    char via[64];
    snprintf(via, sizeof via, "/proc/self/fd/%d", fd);
    dlerror();
    void *h = dlopen(via, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        close(fd);
        return fail(err, n, TR_EINVAL, "plugin %s: dlopen: %s", path, why != NULL ? why : "failed");
    }
    // From here on the plugin stays loaded, and fd open (design notes),
    // whatever happens: a failure below stops trouped's start anyway.
    const uint32_t *abi = dlsym(h, TR_PLUGIN_ABI_SYMBOL);
    if (abi == NULL) {
        return fail(err, n, TR_EINVAL,
                    "plugin %s: no symbol %s: not a troupe plugin (TR_PLUGIN_ABI_DEFINE)", path,
                    TR_PLUGIN_ABI_SYMBOL);
    }
    uint32_t major = *abi >> 16, minor = *abi & 0xffffu;
    if (major != TR_PLUGIN_ABI_MAJOR || minor > TR_PLUGIN_ABI_MINOR) {
        return fail(err, n, TR_EINVAL,
                    "plugin %s: built for plugin ABI %u.%u, and this trouped speaks %u.%u "
                    "(rebuild it against this troupe/plugin.h)",
                    path, major, minor, TR_PLUGIN_ABI_MAJOR, TR_PLUGIN_ABI_MINOR);
    }
    tr_plugin_register_fn reg = (tr_plugin_register_fn)dlsym(h, TR_PLUGIN_REGISTER_SYMBOL);
    if (reg == NULL) {
        return fail(err, n, TR_EINVAL, "plugin %s: no symbol %s (its register function)", path,
                    TR_PLUGIN_REGISTER_SYMBOL);
    }
    p->p_files = xrealloc(p->p_files, (p->p_nfiles + 1) * sizeof *p->p_files);
    p->p_files[p->p_nfiles] = strdup(path);
    if (p->p_files[p->p_nfiles] == NULL) {
        abort();
    }
    load_ctx lc = {
        .lc_reg = p, .lc_plugin = p->p_nfiles++, .lc_first = p->p_n, .lc_err = err, .lc_errlen = n};
    err[0] = '\0';
    const tr_plugin_host host = {
        .abi_major = TR_PLUGIN_ABI_MAJOR,
        .abi_minor = TR_PLUGIN_ABI_MINOR,
        .rt = rt,
        .path = path,
        .kind_register = host_kind_register,
        .host_private = &lc,
    };
    rv = reg(&host);
    if (lc.lc_said) {
        // A kind it could not register fails the plugin, even if its
        // register function went on regardless: no plugin loads in part.
        char said[512];
        snprintf(said, sizeof said, "%s", err);
        return fail(err, n, rv != TR_OK ? rv : lc.lc_rv, "plugin %s: %s: %s", path,
                    TR_PLUGIN_REGISTER_SYMBOL, said);
    }
    if (rv != TR_OK) {
        return fail(err, n, rv, "plugin %s: %s failed: %s (%s)", path, TR_PLUGIN_REGISTER_SYMBOL,
                    tr_err_name(rv), tr_strerror(rv));
    }
    for (size_t i = lc.lc_first; i < p->p_n; i++) {
        if (tr_kind_is_remote(rt, p->p_kinds[i].pk_name)) {
            return fail(err, n, TR_EINVAL,
                        "plugin %s: marked kind '%s' remote (tr_kind_set_remote): plugin kinds "
                        "run only as jobs of the control protocol",
                        path, p->p_kinds[i].pk_name);
        }
    }
    char kinds[1024];
    kinds_text(p, lc.lc_first, kinds, sizeof kinds);
    trd_log("plugin_loaded", "file=\"%s\" kinds=%s", path, kinds);
    return TR_OK;
}

static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// list_plugins reads the names of dfd's plugins (*.so, not hidden) into
// *names (malloc'd, sorted), *count of them.
static tr_err
list_plugins(int dfd, const char *dir, char ***names, size_t *count, char *err, size_t n)
{
    *names = NULL;
    *count = 0;
    int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (d == NULL) {
        tr_err rv =
            fail(err, n, tr_err_from_errno(errno), "plugin directory %s: %s", dir, strerror(errno));
        if (dup_fd >= 0) {
            close(dup_fd);
        }
        return rv;
    }
    char **v = NULL;
    size_t k = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 3 || strcmp(de->d_name + len - 3, ".so") != 0) {
            continue;
        }
        v = xrealloc(v, (k + 1) * sizeof *v);
        v[k] = strdup(de->d_name);
        if (v[k] == NULL) {
            abort();
        }
        k++;
    }
    closedir(d);
    if (k > 0) {
        qsort(v, k, sizeof *v, name_cmp);
    }
    *names = v;
    *count = k;
    return TR_OK;
}

tr_err
trd_plugins_load(tr_rt *rt, const char *dir, char *err, size_t errlen)
{
    err[0] = '\0';
    if (dir == NULL) {
        return TR_OK;
    }
    pthread_once(&g_key_once, key_create);
    if (g_key_err != TR_OK) {
        return fail(err, errlen, g_key_err, "plugins: no runtime key left for the registry");
    }
    plugins *p = tr_rt_local_get(rt, g_key);
    if (p == NULL) {
        p = calloc(1, sizeof *p);
        if (p == NULL) {
            abort();
        }
        tr_rt_local_set(rt, g_key, p); // main thread only: no one else sets it
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        return open_fail("plugin directory", dir, err, errlen);
    }
    tr_err rv = check_file(dfd, true, dir, err, errlen);
    char **names = NULL;
    size_t count = 0;
    if (rv == TR_OK) {
        rv = list_plugins(dfd, dir, &names, &count, err, errlen);
    }
    size_t before = p->p_nfiles;
    for (size_t i = 0; rv == TR_OK && i < count; i++) {
        rv = load_one(rt, p, dfd, dir, names[i], err, errlen);
    }
    for (size_t i = 0; i < count; i++) {
        free(names[i]);
    }
    free(names);
    close(dfd);
    if (rv == TR_OK) {
        trd_log("plugins", "dir=\"%s\" loaded=%zu", dir, p->p_nfiles - before);
    }
    return rv;
}
