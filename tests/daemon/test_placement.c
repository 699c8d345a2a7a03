// test_placement: daemon/placement.h, the workers a job may run on: first
// worker with room wins, slots are taken and given back, a heavy job
// takes all of a limited worker, and a worker's start is what the runner
// calls (with the program's options as given).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

typedef struct fake {
    int starts;
    const char *argv0; // of the last start
    tr_actor_addr owner;
    int freed;
} fake;

static tr_err
fake_start(void *impl, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *proc)
{
    fake *f = impl;
    f->starts++;
    f->argv0 = o->argv[0];
    f->owner = owner;
    *proc = (tr_actor_addr){.node = 7, .actor = (uint64_t)f->starts};
    return TR_OK;
}

static void
fake_free(void *impl)
{
    ((fake *)impl)->freed++;
}

static const trd_worker_ops fake_ops = {.start = fake_start, .free = fake_free};

static void
test_placement_first_with_room(void **state)
{
    (void)state;
    fake a = {0}, b = {0};
    trd_placement *p = trd_placement_new();
    assert_null(trd_place(p, 1, &(uint32_t){0})); // no worker at all
    assert_false(trd_placement_room(p, 1));
    trd_worker *wa = trd_placement_add(p, &fake_ops, &a, "a", 2);
    trd_worker *wb = trd_placement_add(p, &fake_ops, &b, "b", 1);
    assert_string_equal(trd_worker_name(wa), "a");
    uint32_t t1, t2, t3, t4;
    assert_ptr_equal(trd_place(p, 1, &t1), wa);
    assert_ptr_equal(trd_place(p, 0, &t2), wa); // 0 counts as 1
    assert_int_equal(t2, 1);
    assert_int_equal(trd_worker_used(wa), 2);
    assert_ptr_equal(trd_place(p, 1, &t3), wb); // a is full
    assert_false(trd_placement_room(p, 1));
    assert_null(trd_place(p, 1, &t4));
    assert_int_equal(t4, 0);
    trd_unplace(wa, t1);
    assert_true(trd_placement_room(p, 1));
    assert_false(trd_placement_room(p, 2)); // a has one free, b none
    assert_ptr_equal(trd_place(p, 1, &t4), wa);
    trd_placement_free(p);
    assert_int_equal(a.freed, 1);
    assert_int_equal(b.freed, 1);
}

static void
test_placement_heavy_job_takes_a_whole_worker(void **state)
{
    (void)state;
    fake a = {0};
    trd_placement *p = trd_placement_new();
    trd_worker *wa = trd_placement_add(p, &fake_ops, &a, "a", 3);
    uint32_t t, t2;
    assert_ptr_equal(trd_place(p, 1, &t), wa);
    assert_false(trd_placement_room(p, 8)); // needs all 3: waits for the one
    trd_unplace(wa, t);
    assert_ptr_equal(trd_place(p, 8, &t2), wa); // never more than the worker has
    assert_int_equal(t2, 3);
    assert_int_equal(trd_worker_used(wa), 3);
    assert_null(trd_place(p, 1, &t));
    trd_unplace(wa, t2);
    assert_int_equal(trd_worker_used(wa), 0);
    trd_placement_free(p);
}

static void
test_placement_unlimited_and_start(void **state)
{
    (void)state;
    fake a = {0};
    trd_placement *p = trd_placement_new();
    trd_worker *wa = trd_placement_add(p, &fake_ops, &a, "a", 0);
    uint32_t t;
    for (int i = 0; i < 1000; i++) {
        assert_ptr_equal(trd_place(p, 4, &t), wa);
        assert_int_equal(t, 4);
    }
    assert_true(trd_placement_room(p, UINT32_MAX));
    char *argv[] = {"/bin/true", NULL};
    tr_proc_opts o = {.argv = argv};
    tr_actor_addr proc, owner = {.node = 0, .actor = 42};
    assert_int_equal(trd_worker_start(wa, &o, owner, &proc), TR_OK);
    assert_int_equal(a.starts, 1);
    assert_string_equal(a.argv0, "/bin/true");
    assert_true(tr_actor_addr_eq(a.owner, owner));
    assert_int_equal(proc.node, 7);
    // The local worker comes and goes with the placement (its start is
    // integration.daemon's: every exec job there runs through it).
    trd_worker *l = trd_placement_add_local(p, NULL, "/sys/fs/cgroup/x");
    assert_string_equal(trd_worker_name(l), "local");
    trd_placement_free(p);
    assert_int_equal(a.freed, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement_first_with_room),
        cmocka_unit_test(test_placement_heavy_job_takes_a_whole_worker),
        cmocka_unit_test(test_placement_unlimited_and_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
