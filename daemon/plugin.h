// plugin.h: trouped's plugin loader and the registry of the task kinds its
// plugins registered (troupe/plugin.h is the ABI the plugins see).
// Internal to the daemon (trd_). trd_plugins_load runs once on trouped's
// main thread, before the runner starts and the control socket opens; the
// registry is read-only from then on, so the lookups need no lock.
#ifndef TRD_PLUGIN_H
#define TRD_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>

#include <troupe/executor.h>
#include <troupe/plugin.h>
#include <troupe/rt.h>

// trd_plugins_load loads every plugin of dir (NULL: none, TR_OK) into rt:
// each file whose name ends in ".so" (and does not start with '.'), in
// name order. The directory, opened without following a symbolic link,
// must be owned by trouped's effective user and not be group- or
// world-writable, and so must each plugin, a regular file opened the same
// way; the checks are made on the opened descriptor, and the library is
// loaded through that descriptor (/proc/self/fd/N, RTLD_NOW | RTLD_LOCAL),
// so what was checked is what is loaded. A plugin is never unloaded, and
// its descriptor stays open (see plugin.c). Each is logged
// (`plugin_loaded file=... kinds=...`). TR_OK, or the first error, with
// err (errlen bytes, always terminated) naming the directory or the file
// and what is wrong: TR_EPERM (owner or mode), TR_EINVAL (not a directory
// or not a regular file, a symbolic link, no troupe plugin, another ABI,
// a kind marked remote), or the register function's error, and the errno
// mapping of a failed open. Main thread, before anything reads the
// registry; it blocks (file system, the plugins' constructors).
tr_err trd_plugins_load(tr_rt *rt, const char *dir, char *err, size_t errlen);

// trd_plugin_kind_known says whether a plugin loaded into rt (a tr_rt *,
// void for trd_kind_known_fn) registered the kind called name. Any thread.
bool trd_plugin_kind_known(void *rt, const char *name);

// trd_plugin_spawn starts a task of the plugin kind called name with len
// bytes of arguments (args may be NULL when len is 0), as tr_kind_spawn
// does: TR_OK, *join (the caller owns it) and *encode (the kind's result
// encoder), or TR_ENOTFOUND for a kind no plugin registered (a kind of
// the runtime's own registry is not a plugin kind), or tr_kind_spawn's
// errors (the kind's init's among them). Any thread; on a worker the
// kind's init runs there.
tr_err trd_plugin_spawn(tr_rt *rt, const char *name, const void *args, size_t len, tr_join *join,
                        tr_kind_encode_fn *encode);

#endif
