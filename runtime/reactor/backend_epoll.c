// Design notes.
//
// The epoll backend. One epoll instance per runtime, shared by every
// worker (the driver waits in it); every registration is added once,
// edge-triggered with EPOLLRDHUP (ONESHOT registrations of blocking
// descriptors: level-triggered, re-armed per wait), its key
// ({generation, index}) as the user data. An eventfd, registered with a
// key no registration can have, interrupts a wait; this file drains it,
// so the reactor never sees it. Its state (the descriptors and the event
// buffer) is private here, behind rx_be, as redis keeps aeApiState in
// ae_epoll.c.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor/reactor.h"

#define EVFD_KEY UINT64_MAX
#define MAX_EVENTS 1024

typedef struct ep_state {
    int epfd;
    int evfd;
    struct epoll_event *events; // the driver's (one waits at a time)
    int nevents;
} ep_state;

static int
ep_init(tr__reactor *rx)
{
    ep_state *st = rx->rx_be;
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (st->epfd < 0) {
        return errno;
    }
    st->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->evfd < 0) {
        int e = errno;
        close(st->epfd);
        return e;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVFD_KEY};
    if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->evfd, &ev) != 0) {
        int e = errno;
        close(st->evfd);
        close(st->epfd);
        return e;
    }
    st->events = tr__alloc(sizeof(struct epoll_event) * MAX_EVENTS);
    st->nevents = MAX_EVENTS;
    return 0;
}

static void
ep_fini(tr__reactor *rx)
{
    ep_state *st = rx->rx_be;
    close(st->evfd);
    close(st->epfd);
    tr__free(st->events, sizeof(struct epoll_event) * (size_t)st->nevents);
}

static uint64_t
io_key(const tr_io *io)
{
    return (uint64_t)atomic_load_explicit(&io->io_gen, memory_order_relaxed) << 32 | io->io_index;
}

static uint32_t
ep_events(uint32_t dirs)
{
    uint32_t ev = EPOLLONESHOT;
    if (dirs & (1u << TR_IO_READ)) {
        ev |= EPOLLIN | EPOLLRDHUP;
    }
    if (dirs & (1u << TR_IO_WRITE)) {
        ev |= EPOLLOUT;
    }
    return ev;
}

static int
ep_add(tr__reactor *rx, tr_io *io, uint32_t dirs)
{
    ep_state *st = rx->rx_be;
    struct epoll_event ev = {.data.u64 = io_key(io)};
    if (io->io_flags & TR__IOF_ONESHOT) {
        ev.events = ep_events(dirs);
    } else {
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    }
    int fd = atomic_load_explicit(&io->io_fd, memory_order_relaxed);
    return epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
}

static int
ep_rearm(tr__reactor *rx, tr_io *io, uint32_t dirs)
{
    ep_state *st = rx->rx_be;
    struct epoll_event ev = {.events = ep_events(dirs), .data.u64 = io_key(io)};
    int fd = atomic_load_explicit(&io->io_fd, memory_order_relaxed);
    return epoll_ctl(st->epfd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

static int
ep_del(tr__reactor *rx, tr_io *io)
{
    ep_state *st = rx->rx_be;
    int fd = atomic_load_explicit(&io->io_fd, memory_order_relaxed);
    return epoll_ctl(st->epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : errno;
}

static int
ep_wait(tr__reactor *rx, tr__worker *w, int timeout_ms)
{
    (void)w; // one epoll instance for every worker
    ep_state *st = rx->rx_be;
    struct epoll_event *evs = st->events;
    int n;
    do {
        n = epoll_wait(st->epfd, evs, st->nevents, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        tr__panic("epoll_wait: %s", strerror(errno));
    }
    tr__rx_new_tick(rx);
    int got = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == EVFD_KEY) {
            // Our own wake: drain it (EFD_NONBLOCK; a saturated or empty
            // counter is fine either way).
            uint64_t v;
            ssize_t r;
            do {
                r = read(st->evfd, &v, sizeof v);
            } while (r < 0 && errno == EINTR);
            continue;
        }
        got++;
        uint32_t e = evs[i].events;
        uint64_t bits = 0;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) {
            bits |= TR__RD_READ;
        }
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            bits |= TR__RD_WRITE;
        }
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            bits |= TR__RD_RHUP;
        }
        if (e & (EPOLLHUP | EPOLLERR)) {
            bits |= TR__RD_WHUP;
        }
        tr__io_event(rx, evs[i].data.u64, bits);
    }
    return got;
}

static void
ep_wake(tr__reactor *rx, tr__worker *w)
{
    (void)w;
    ep_state *st = rx->rx_be;
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(st->evfd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
    // EAGAIN: the counter is saturated, so the driver wakes anyway.
}

static int
ep_wake_fd(tr__reactor *rx)
{
    return ((ep_state *)rx->rx_be)->evfd;
}

const tr__backend_ops tr__backend_epoll = {
    .name = "epoll",
    .state_size = sizeof(ep_state),
    .init = ep_init,
    .fini = ep_fini,
    .add = ep_add,
    .rearm = ep_rearm,
    .del = ep_del,
    .wait = ep_wait,
    .wake = ep_wake,
    .submit = NULL, // readiness: nothing is queued for submission
    .wake_fd = ep_wake_fd,
};
