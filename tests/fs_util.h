// fs_util.h: files for tests that lay out directories of their own (the
// plugin tests): copying a file with a mode, and removing a tree. Static
// functions of one test executable each; include after cmocka.
#ifndef TR_FS_UTIL_H
#define TR_FS_UTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

// fs_copy copies the file from to the new file to (which must not exist),
// then gives it mode (chmod's, not masked by the umask).
static void __attribute__((unused)) fs_copy(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    assert_true(in >= 0);
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(out >= 0);
    char chunk[65536];
    ssize_t n;
    while ((n = read(in, chunk, sizeof chunk)) > 0) {
        assert_int_equal(write(out, chunk, (size_t)n), n);
    }
    assert_int_equal(n, 0);
    close(in);
    assert_int_equal(fchmod(out, mode), 0);
    close(out);
}

static int
fs_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// fs_rm_tree removes path and everything below it (links are removed, not
// followed). What cannot be removed stays, silently.
static void __attribute__((unused)) fs_rm_tree(const char *path)
{
    chmod(path, 0700);
    nftw(path, fs_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
