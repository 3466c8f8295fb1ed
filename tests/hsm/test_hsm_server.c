/* Component tests for hsm/hsm_server.c: a real `p11-kit server` over a
 * throwaway SoftHSM2 token, reached through p11-kit-client.so the way the
 * gateway reaches it (DESIGN.md "Keys": restart on death, unique socket per
 * start behind RUN_DIR/current, no orphan outliving its keeper, separate
 * uids when started as root). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/sgerr.h"
#include "hsm/hsm_server.h"

#define CLIENT_MODULE "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

struct fx {
  char dir[64];   /* mkdtemp */
  char conf[128]; /* DIR/softhsm2.conf */
  char run[128];  /* DIR/run */
  struct hsm_server_params p;
};

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh_rc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int vsh(const char *fmt, va_list ap) {
  char cmd[2048];
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int sh_rc(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = vsh(fmt, ap);
  va_end(ap);
  return rc;
}

static void sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = vsh(fmt, ap);
  va_end(ap);
  assert_int_equal(rc, 0);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A fresh SoftHSM2 token "sealgate" (user PIN 5678) in a temp folder. */
static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "/tmp/sghsm-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->conf, sizeof f->conf, "%s/softhsm2.conf", f->dir);
  snprintf(f->run, sizeof f->run, "%s/run", f->dir);
  FILE *c = fopen(f->conf, "w");
  assert_non_null(c);
  fprintf(c, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
          f->dir);
  fclose(c);
  sh("mkdir %s/tokens && SOFTHSM2_CONF=%s softhsm2-util --init-token --free --label sealgate "
     "--so-pin 1234 --pin 5678 >/dev/null",
     f->dir, f->conf);
  f->p = (struct hsm_server_params){.run_dir = f->run, .softhsm_conf = f->conf,
                                    .token = "sealgate"};
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  sh("rm -rf %s", f->dir);
  free(f);
  return 0;
}

static struct hsm_server *start(struct fx *f) {
  struct hsm_server *s = NULL;
  char err[512] = "";
  int rc = hsm_server_start(&f->p, 10000, &s, err, sizeof err);
  if (rc) fail_msg("hsm_server_start: %s (%s)", err, sgerr_str(rc));
  return s;
}

/* The token, listed through the client module as the gateway would. */
static bool lists_token(const char *address) {
  return sh_rc("P11_KIT_SERVER_ADDRESS='%s' pkcs11-tool --module %s -L 2>/dev/null | "
               "grep -q 'token label *: sealgate'",
               address, CLIENT_MODULE) == 0;
}

static pid_t server_pid(const struct fx *f) {
  char path[256];
  snprintf(path, sizeof path, "%s/server.pid", f->run);
  FILE *p = fopen(path, "r");
  int pid = 0;
  if (p) {
    if (fscanf(p, "%d", &pid) != 1) pid = 0;
    fclose(p);
  }
  return pid;
}

static void current_socket(const struct fx *f, char *out, size_t cap) {
  char link[256];
  snprintf(link, sizeof link, "%s/current", f->run);
  ssize_t n = readlink(link, out, cap - 1);
  assert_true(n > 0);
  out[n] = '\0';
}

/* Gone or a zombie nobody reaps (the container's pid 1 may not). */
static bool pid_gone(pid_t pid) {
  char path[64], st[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *p = fopen(path, "r");
  if (!p) return true;
  bool zombie = fgets(st, sizeof st, p) && strstr(st, ") Z ");
  fclose(p);
  return zombie;
}

static bool gone_within(pid_t pid, int ms) {
  for (int t = 0; t < ms; t += 20, sleep_ms(20))
    if (pid_gone(pid)) return true;
  return pid_gone(pid);
}

/* True if a live process has needle in its command line (scanned here,
 * not with grep, whose own command line would match). */
static bool process_mentions(const char *needle) {
  DIR *d = opendir("/proc");
  assert_non_null(d);
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d))) {
    char path[300], buf[4096];
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *p = fopen(path, "r");
    if (!p) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    fclose(p);
    for (size_t i = 0; i < n; i++)
      if (buf[i] == '\0') buf[i] = ' ';
    buf[n] = '\0';
    found = strstr(buf, needle) != NULL;
  }
  closedir(d);
  return found;
}

static bool no_children(void) { return waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD; }

static void test_start_serves_token(void **state) {
  struct fx *f = *state;
  struct hsm_server *s = start(f);
  assert_true(hsm_server_alive(s));
  char want[256];
  snprintf(want, sizeof want, "unix:path=%s/current", f->run);
  assert_string_equal(hsm_server_address(s), want);
  assert_true(lists_token(hsm_server_address(s)));
  hsm_server_stop(s);
}

/* Kill the current server; wait for a different one behind current. */
static pid_t kill_and_await_successor(struct fx *f, struct hsm_server *s, char *old_sock,
                                      size_t cap) {
  pid_t old = server_pid(f);
  assert_true(old > 0);
  current_socket(f, old_sock, cap);
  assert_int_equal(kill(old, SIGKILL), 0);
  for (int t = 0; t < 3000 && (server_pid(f) == old || !hsm_server_alive(s)); t += 20)
    sleep_ms(20);
  assert_int_not_equal(server_pid(f), old);
  assert_true(hsm_server_alive(s));
  return old;
}

static void test_restart_after_server_dies(void **state) {
  struct fx *f = *state;
  struct hsm_server *s = start(f);
  char old_sock[256], new_sock[256];
  kill_and_await_successor(f, s, old_sock, sizeof old_sock);
  current_socket(f, new_sock, sizeof new_sock);
  assert_string_not_equal(old_sock, new_sock);
  assert_true(lists_token(hsm_server_address(s))); /* same address, new server */
  hsm_server_stop(s);
}

static void test_server_dies_with_keeper(void **state) {
  struct fx *f = *state;
  struct hsm_server *s = start(f);
  pid_t keeper = hsm_server_keeper_pid(s), server = server_pid(f);
  assert_int_equal(kill(keeper, SIGKILL), 0);
  assert_int_equal(waitpid(keeper, NULL, 0), keeper);
  assert_true(gone_within(server, 2000)); /* PR_SET_PDEATHSIG */
  hsm_server_stop(s);
  s = start(f); /* the same RUN_DIR is usable again */
  assert_true(lists_token(hsm_server_address(s)));
  hsm_server_stop(s);
}

/* p11-kit server removes its socket path on exit: an old server on an old
 * path must not take the current one down with it. */
static void test_orphan_cannot_cut_off_successor(void **state) {
  struct fx *f = *state;
  struct hsm_server *s = start(f);
  char old_name[256], old_path[512];
  kill_and_await_successor(f, s, old_name, sizeof old_name);
  snprintf(old_path, sizeof old_path, "%s/%s", f->run, old_name);
  pid_t orphan = fork();
  assert_true(orphan >= 0);
  if (orphan == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    setenv("SOFTHSM2_CONF", f->conf, 1);
    execlp("p11-kit", "p11-kit", "server", "-f", "-n", old_path, "--provider", SOFTHSM_MODULE,
           "pkcs11:token=sealgate", (char *)NULL);
    _exit(127);
  }
  for (int t = 0; t < 5000 && access(old_path, F_OK) != 0; t += 20) sleep_ms(20);
  assert_int_equal(access(old_path, F_OK), 0);
  kill(orphan, SIGTERM);
  assert_int_equal(waitpid(orphan, NULL, 0), orphan);
  assert_int_not_equal(access(old_path, F_OK), 0); /* it did remove its path */
  assert_true(hsm_server_alive(s));
  assert_true(lists_token(hsm_server_address(s)));
  hsm_server_stop(s);
}

static void test_stop_leaves_nothing(void **state) {
  struct fx *f = *state;
  struct hsm_server *s = start(f);
  pid_t keeper = hsm_server_keeper_pid(s), server = server_pid(f);
  assert_true(lists_token(hsm_server_address(s))); /* with a per-connection child */
  hsm_server_stop(s);
  assert_true(pid_gone(keeper));
  assert_true(pid_gone(server));
  assert_false(process_mentions(f->run));
  char path[256];
  struct stat st;
  snprintf(path, sizeof path, "%s/current", f->run);
  assert_int_not_equal(lstat(path, &st), 0);
  assert_true(no_children());
}

static void test_run_dir_too_long(void **state) {
  struct fx *f = *state;
  char run[256];
  snprintf(run, sizeof run, "%s/%0100d", f->dir, 0);
  f->p.run_dir = run;
  struct hsm_server *s = (struct hsm_server *)1;
  char err[512] = "";
  assert_int_equal(hsm_server_start(&f->p, 5000, &s, err, sizeof err), SG_ECONFIG);
  assert_null(s);
  assert_non_null(strstr(err, run)); /* names the path */
  assert_non_null(strstr(err, "107"));
  assert_true(no_children());
  assert_int_not_equal(access(run, F_OK), 0);
}

static void test_missing_p11kit(void **state) {
  struct fx *f = *state;
  f->p.p11kit = "/nonexistent/p11-kit";
  struct hsm_server *s = NULL;
  char err[512] = "";
  int rc = hsm_server_start(&f->p, 5000, &s, err, sizeof err);
  assert_int_equal(rc, SG_ENOTFOUND);
  assert_null(s);
  assert_non_null(strstr(err, "/nonexistent/p11-kit"));
  assert_true(no_children()); /* keeper and server reaped */
}

static void test_missing_server_user(void **state) {
  struct fx *f = *state;
  f->p.server_user = "sgtest-no-such-user";
  struct hsm_server *s = NULL;
  char err[512] = "";
  assert_int_equal(hsm_server_start(&f->p, 5000, &s, err, sizeof err), SG_ENOTFOUND);
  assert_non_null(strstr(err, "useradd --system"));
  assert_true(no_children());
}

/* ---- root only: server and gateway as separate principals ------------- */

static bool skip_unless_root(void) {
  if (geteuid() == 0) return false;
  print_message("skipped: needs root (separate uids for server and gateway)\n");
  return true;
}

/* Exit status of sh -c cmd run as uid:gid (no supplementary groups). */
static int run_as(uid_t uid, gid_t gid, const char *cmd) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static uid_t status_uid(pid_t pid) {
  char path[64], line[256];
  unsigned uid = ~0U;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *p = fopen(path, "r");
  assert_non_null(p);
  while (fgets(line, sizeof line, p))
    if (sscanf(line, "Uid: %u", &uid) == 1) break;
  fclose(p);
  return (uid_t)uid;
}

/* sgtest-hsm owns the token, sgtest-gw is the gateway. */
static struct hsm_server *start_separated(struct fx *f, struct passwd *hsm, struct passwd *gw) {
  sh("id sgtest-hsm >/dev/null 2>&1 || useradd --system --no-create-home --shell "
     "/usr/sbin/nologin sgtest-hsm");
  sh("id sgtest-gw >/dev/null 2>&1 || useradd --system --no-create-home --shell "
     "/usr/sbin/nologin sgtest-gw");
  *hsm = *getpwnam("sgtest-hsm");
  *gw = *getpwnam("sgtest-gw");
  sh("chmod 0711 %s && chmod 0644 %s && chown -R sgtest-hsm: %s/tokens && chmod 0700 %s/tokens",
     f->dir, f->conf, f->dir, f->dir);
  f->p.server_user = "sgtest-hsm";
  f->p.client_uid = gw->pw_uid;
  f->p.client_gid = gw->pw_gid;
  return start(f);
}

static void test_separate_principals(void **state) {
  if (skip_unless_root()) return;
  struct fx *f = *state;
  struct passwd hsm, gw;
  struct hsm_server *s = start_separated(f, &hsm, &gw);
  assert_int_equal(status_uid(server_pid(f)), hsm.pw_uid);
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "P11_KIT_SERVER_ADDRESS='%s' pkcs11-tool --module %s -L 2>/dev/null | "
           "grep -q 'token label *: sealgate'",
           hsm_server_address(s), CLIENT_MODULE);
  assert_int_equal(run_as(gw.pw_uid, gw.pw_gid, cmd), 0);
  struct passwd *nobody = getpwnam("nobody");
  assert_non_null(nobody);
  assert_int_not_equal(run_as(nobody->pw_uid, nobody->pw_gid, cmd), 0);
  /* Root passes the socket's permissions but not p11-kit's --user check. */
  assert_false(lists_token(hsm_server_address(s)));
  assert_true(hsm_server_alive(s)); /* a connect() still succeeds */
  hsm_server_stop(s);
}

/* The server drops its uid before PR_SET_PDEATHSIG is set, so it still
 * dies with its keeper. */
static void test_separated_server_dies_with_keeper(void **state) {
  if (skip_unless_root()) return;
  struct fx *f = *state;
  struct passwd hsm, gw;
  struct hsm_server *s = start_separated(f, &hsm, &gw);
  pid_t keeper = hsm_server_keeper_pid(s), server = server_pid(f);
  assert_int_equal(kill(keeper, SIGKILL), 0);
  assert_int_equal(waitpid(keeper, NULL, 0), keeper);
  assert_true(gone_within(server, 2000));
  hsm_server_stop(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_start_serves_token, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_after_server_dies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_dies_with_keeper, setup, teardown),
      cmocka_unit_test_setup_teardown(test_orphan_cannot_cut_off_successor, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_leaves_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_dir_too_long, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_p11kit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_server_user, setup, teardown),
      cmocka_unit_test_setup_teardown(test_separate_principals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_separated_server_dies_with_keeper, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
