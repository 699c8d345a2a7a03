// test_proc_actor.c: external programs as actors (troupe/proc_actor.h):
// exit codes, captured output, stdin, the cap, timeouts that kill the whole
// group, a program that cannot start, an exit while a grandchild holds the
// pipes, a stop of the actor, and the leader's own session.
#include "actors/actor_util.h"

#include <signal.h>
#include <unistd.h>
#include <troupe/proc_actor.h>

// The owner: keeps a copy of the one ProcessExit it expects.
typedef struct outcome {
    tu_event ev;
    unsigned exits;
    Troupe__V1__ProcessExit x; // scalars
    char out[4096], err[4096];
    size_t out_len, err_len;
    tr_err error;
} outcome;

static tr_err
owner_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(outcome **)state = arg;
    return TR_OK;
}

static void
owner_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    outcome *o = *(outcome **)state;
    if (!tr_msg_is(m, &troupe__v1__process_exit__descriptor)) {
        return;
    }
    const Troupe__V1__ProcessExit *x = tr_msg_body(m);
    o->x = *x;
    o->out_len = x->stdout.len < sizeof o->out ? x->stdout.len : sizeof o->out - 1;
    if (o->out_len > 0) {
        memcpy(o->out, x->stdout.data, o->out_len);
    }
    o->out[o->out_len] = '\0';
    o->err_len = x->stderr.len < sizeof o->err ? x->stderr.len : sizeof o->err - 1;
    if (o->err_len > 0) {
        memcpy(o->err, x->stderr.data, o->err_len);
    }
    o->err[o->err_len] = '\0';
    o->error = tr_msg_reason_err(x->error);
    o->exits++;
    tu_event_set(&o->ev);
}

static const tr_actor_spec owner_spec = {
    .name = "owner", .size = sizeof(outcome *), .init = owner_init, .receive = owner_receive};

static tr_actor_addr
run_prog(bg *b, outcome *o, const tr_proc_opts *po)
{
    memset(o, 0, sizeof *o);
    tu_event_init(&o->ev);
    tr_actor_addr owner, p = TR_ACTOR_NONE;
    assert_int_equal(tr_actor_spawn(b->rt, &owner_spec, o, NULL, &owner), TR_OK);
    assert_int_equal(tr_proc_actor_start(b->rt, po, owner, &p), TR_OK);
    return p;
}

static void
wait_exit(outcome *o)
{
    assert_true(tu_event_wait(&o->ev, TU_WAIT_MS));
    assert_int_equal(o->exits, 1);
}

static void
test_proc_actor_exit_codes_and_output(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *t[] = {"/bin/true", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = t});
    wait_exit(&o);
    assert_true(o.x.exited);
    assert_int_equal(o.x.code, 0);
    assert_int_equal(o.error, TR_OK);
    tu_event_destroy(&o.ev);

    char *sh[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 7", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 7);
    assert_string_equal(o.out, "out\n");
    assert_string_equal(o.err, "err\n");
    assert_int_equal(o.x.stdout_bytes, 4);
    assert_false(o.x.truncated);
    tu_event_destroy(&o.ev);

    // stdin bytes reach the program, which then sees end of file.
    char *cat[] = {"cat", NULL};
    run_prog(
        &b, &o,
        &(tr_proc_opts){.argv = cat, .search_path = true, .stdin_data = "hello", .stdin_len = 5});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_string_equal(o.out, "hello");
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

static void
test_proc_actor_cap_and_missing_program(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // 3 MB through a 1000-byte cap: drained, never blocked, truncated.
    char *big[] = {"/bin/sh", "-c", "head -c 3000000 /dev/zero", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = big, .output_cap = 1000});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_true(o.x.truncated);
    assert_int_equal(o.x.stdout.len, 1000);
    assert_true(o.x.stdout_bytes > 1000);
    tu_event_destroy(&o.ev);

    char *none[] = {"/nonexistent/program", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = none});
    wait_exit(&o);
    assert_int_equal(o.error, TR_ENOENT);
    assert_int_equal(o.x.pid, 0);
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

static void
test_proc_actor_timeout_kills_the_group(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // The shell's child sleeps too: the whole group goes.
    char *sh[] = {"/bin/sh", "-c", "sleep 100 & sleep 100", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh, .timeout_ms = 50, .kill_grace_ms = 200});
    wait_exit(&o);
    assert_true(o.x.timed_out);
    assert_false(o.x.exited);
    assert_true(o.x.signal == SIGTERM || o.x.signal == SIGKILL);
    pid_t pgid = o.x.pid;
    assert_true(TU_SPIN_UNTIL(kill(-pgid, 0) == -1 && errno == ESRCH, TU_WAIT_MS));
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

static void
test_proc_actor_exit_is_the_leaders(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // A grandchild keeps stdout open for 30 s; the report comes at the
    // leader's exit (the wait's deadline is well under 30 s).
    char *sh[] = {"/bin/sh", "-c", "(sleep 30; echo late) & echo early; exit 3", NULL};
    tr_actor_addr p = run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 3);
    assert_string_equal(o.out, "early\n");
    (void)p;
    kill(-o.x.pid, SIGKILL); // the grandchild, still in the group
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

static void
test_proc_actor_kill_and_stop(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sl[] = {"/bin/sleep", "100", NULL};
    tr_actor_addr p = run_prog(&b, &o, &(tr_proc_opts){.argv = sl, .kill_grace_ms = 200});
    Troupe__V1__ProcessKill *k;
    tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&k);
    k->signal = SIGINT;
    assert_int_equal(tr_actor_send(NULL, p, m), TR_OK);
    wait_exit(&o);
    assert_int_equal(o.x.signal, SIGINT);
    tu_event_destroy(&o.ev);

    // Stopping the actor kills its program, and the owner still hears.
    p = run_prog(&b, &o, &(tr_proc_opts){.argv = sl, .kill_grace_ms = 200});
    assert_int_equal(tr_actor_stop_other(p, TR_OK, NULL), TR_OK);
    wait_exit(&o);
    assert_true(o.x.killed);
    assert_int_equal(o.x.signal, SIGTERM);
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

// The leader leads a session of its own, and its group: the shell prints
// its pid, session (field 6) and group (5) from /proc/$$/stat (comm "sh"
// has no spaces, so read splits the fields right).
static void
test_proc_actor_session_leader(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sh[] = {"/bin/sh", "-c", "read -r p c s pp g sid r </proc/$$/stat; echo $$ $sid $g",
                  NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    char want[64];
    snprintf(want, sizeof want, "%d %d %d\n", o.x.pid, o.x.pid, o.x.pid);
    assert_string_equal(o.out, want);
    assert_true(tu_proc_stat_field(getpid(), 6) != o.x.pid);
    tu_event_destroy(&o.ev);
    bg_stop(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proc_actor_exit_codes_and_output),
        cmocka_unit_test(test_proc_actor_cap_and_missing_program),
        cmocka_unit_test(test_proc_actor_timeout_kills_the_group),
        cmocka_unit_test(test_proc_actor_exit_is_the_leaders),
        cmocka_unit_test(test_proc_actor_kill_and_stop),
        cmocka_unit_test(test_proc_actor_session_leader),
    };
    return tu_run(tests);
}
