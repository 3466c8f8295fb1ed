/*
 * hsm_server - see hsm_server.h.
 *
 * Owns: the keeper process and the two pipes between it and the caller
 * (ctl: closing its write end tells the keeper to stop; ready: the keeper's
 * one report on the first start), and everything in RUN_DIR (the server
 * sockets, server.pid, the symlink current).  Inside the keeper, it owns
 * the token server processes: only the keeper spawns, kills and reaps them.
 *
 * Trusts: its params (the validated config) and the p11-kit binary.  It
 * does not trust the token server to stay up, to start within 10 s, or to
 * tidy RUN_DIR (a SIGKILLed server leaves its socket behind), nor the fds
 * and signal dispositions the keeper inherits from the caller (it closes
 * and resets them).
 *
 * Privileges, and why not p11-kit's own --run-as-user/--run-as-group: the
 * keeper (root) drops to server_user in the server child before exec.
 * Linux clears PR_SET_PDEATHSIG when a process changes its uid, so a
 * server that setuid()s itself would outlive a killed keeper; and a
 * non-root p11-kit cannot chown its socket to the client (it does so only
 * when given both --user and --group, and then fails), while the socket it
 * creates is mode 0711 and a unix socket needs write permission to
 * connect.  So the server gets only --user (p11-kit then rejects any other
 * peer uid after accept), and the keeper chowns each new socket to the
 * client before publishing it through RUN_DIR/current.
 */
#include "hsm/hsm_server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "hsm/hsm.h"

/* Longest path a sockaddr_un holds, and the longest socket name we append
 * to RUN_DIR (largest generation, largest pid the kernel can hand out). */
#define HSM_SUN_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define HSM_SOCK_WORST "/p11-4294967295-4194304.sock"

enum {
  HSM_READY_MS = 10000,     /* a new server must accept within this */
  HSM_BACKOFF_MIN_MS = 100, /* first restart delay, doubled per failure */
  HSM_BACKOFF_MAX_MS = 5000,
  HSM_STABLE_MS = 30000,    /* uptime after which the backoff resets */
  HSM_GRACE_MS = 2000,      /* SIGTERM to SIGKILL at shutdown */
  HSM_STOP_CAP_MS = 5000,   /* how long stop waits for the keeper */
  HSM_POLL_MS = 20,
};

/* What the keeper's waits end on. */
enum { HSM_TIMEOUT = 0, HSM_STOP = 1, HSM_DIED = 2 };

struct hsm_server {
  pid_t keeper;
  int ctl_fd;   /* caller: write end; keeper: read end */
  int ready_fd; /* caller: read end; keeper: write end until the first report */
  bool drop;    /* root with server_user: run the server as server_uid */
  uid_t server_uid, client_uid;
  gid_t server_gid, client_gid;
  char server_user[64], client_user[64]; /* client_user empty: no --user */
  char run_dir[HSM_SUN_MAX + 1], current[HSM_SUN_MAX + 1];
  char address[3 * HSM_SUN_MAX + 32];
  char p11kit[PATH_MAX]; /* empty: "p11-kit" from PATH, then /usr/bin */
  char module[PATH_MAX], softhsm_conf[PATH_MAX];
  char token_uri[3 * 128 + 16];
  /* Keeper only: the current generation (pid 0 when none is running). */
  unsigned gen;
  pid_t pid;
  int pidfd;
  long long started_ms;
  char sock[HSM_SUN_MAX + 1];
};

static long long hsm__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hsm__sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* 0 if something accepts connections on path now, else -errno. */
static int hsm__connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) > HSM_SUN_MAX) return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* prefix + in + suffix into out, percent-encoding in except unreserved
 * characters and those in keep: both p11-kit's address parser and its
 * pkcs11: URI parser decode %XX.  False if it does not fit. */
static bool hsm__encode(char *out, size_t cap, const char *prefix, const char *in,
                        const char *keep, const char *suffix) {
  static const char hex[] = "0123456789ABCDEF";
  size_t j = (size_t)snprintf(out, cap, "%s", prefix);
  for (const unsigned char *c = (const unsigned char *)in; *c && j + 4 < cap; c++) {
    if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
        strchr("-._~", *c) || strchr(keep, *c)) {
      out[j++] = (char)*c;
    } else {
      out[j++] = '%';
      out[j++] = hex[*c >> 4];
      out[j++] = hex[*c & 15];
    }
  }
  return j + 4 < cap && (size_t)snprintf(out + j, cap - j, "%s", suffix) < cap - j;
}

static bool hsm__copy(char *dst, size_t cap, const char *src) {
  return (size_t)snprintf(dst, cap, "%s", src) < cap;
}

/* ---- caller side: plan, RUN_DIR, fork ---------------------------------- */

/* Users are resolved before the fork so that a missing one is the
 * caller's error message, not a keeper that restarts forever. */
static int hsm__plan_users(struct hsm_server *s, const struct hsm_server_params *p, char *err,
                           size_t errlen) {
  if (!p->server_user) return 0;
  struct passwd *pw = getpwnam(p->server_user);
  if (!pw) {
    snprintf(err, errlen,
             "token server user '%s' does not exist: create it with `useradd --system "
             "--no-create-home --shell /usr/sbin/nologin %s`",
             p->server_user, p->server_user);
    return SG_ENOTFOUND;
  }
  if (geteuid() != 0) {
    if (pw->pw_uid == geteuid()) return 0;
    snprintf(err, errlen, "token server user '%s' needs sealgate to be started as root",
             p->server_user);
    return SG_EPERM;
  }
  s->drop = true;
  s->server_uid = pw->pw_uid;
  s->server_gid = pw->pw_gid;
  bool fits = hsm__copy(s->server_user, sizeof s->server_user, pw->pw_name);
  struct passwd *cl = getpwuid(p->client_uid); /* p11-kit's --user takes a name */
  if (!cl) {
    snprintf(err, errlen, "gateway uid %u has no passwd entry", (unsigned)p->client_uid);
    return SG_ENOTFOUND;
  }
  s->client_uid = p->client_uid;
  s->client_gid = p->client_gid;
  if (!fits || !hsm__copy(s->client_user, sizeof s->client_user, cl->pw_name)) {
    snprintf(err, errlen, "user name too long for the token server");
    return SG_EINVAL;
  }
  return 0;
}

static int hsm__plan(struct hsm_server *s, const struct hsm_server_params *p, char *err,
                     size_t errlen) {
  if (!p->run_dir || p->run_dir[0] != '/' || !p->softhsm_conf || !p->token) {
    snprintf(err, errlen, "token server needs an absolute run_dir, softhsm_conf and token");
    return SG_EINVAL;
  }
  /* Checked against the longest name up front, so a restart never fails
   * on a pid with more digits than the first one had. */
  if (strlen(p->run_dir) + strlen(HSM_SOCK_WORST) > HSM_SUN_MAX) {
    snprintf(err, errlen,
             "token server socket path %s/p11-GEN-PID.sock could exceed the %zu-byte limit "
             "of a unix socket path: use a run_dir of at most %zu bytes",
             p->run_dir, HSM_SUN_MAX, HSM_SUN_MAX - strlen(HSM_SOCK_WORST));
    return SG_ECONFIG;
  }
  snprintf(s->run_dir, sizeof s->run_dir, "%s", p->run_dir);
  snprintf(s->current, sizeof s->current, "%s/current", p->run_dir);
  if (!hsm__copy(s->p11kit, sizeof s->p11kit, p->p11kit ? p->p11kit : "") ||
      !hsm__copy(s->module, sizeof s->module, p->module ? p->module : HSM_SOFTHSM2_MODULE) ||
      !hsm__copy(s->softhsm_conf, sizeof s->softhsm_conf, p->softhsm_conf) ||
      !hsm__encode(s->token_uri, sizeof s->token_uri, "pkcs11:token=", p->token, "", "") ||
      !hsm__encode(s->address, sizeof s->address, "unix:path=", p->run_dir, "/", "/current")) {
    snprintf(err, errlen, "token server path or token label too long");
    return SG_EINVAL;
  }
  return hsm__plan_users(s, p, err, errlen);
}

/* Opened with O_NOFOLLOW so a symlink planted at RUN_DIR is refused
 * rather than chowned through. */
static int hsm__make_run_dir(const struct hsm_server *s, char *err, size_t errlen) {
  mode_t mode = s->drop ? 0711 : 0700; /* clients only traverse to the socket */
  if (mkdir(s->run_dir, mode) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", s->run_dir, strerror(errno));
    return SG_EIO;
  }
  int fd = open(s->run_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || (s->drop && fchown(fd, s->server_uid, s->server_gid) != 0) ||
      fchmod(fd, mode) != 0) {
    snprintf(err, errlen, "cannot prepare %s as the token server's folder: %s", s->run_dir,
             strerror(errno));
    if (fd >= 0) close(fd);
    return SG_EIO;
  }
  close(fd);
  return 0;
}

/* ---- keeper: one generation of the token server ------------------------ */

/* run_dir's length was checked at start against the worst case, so the
 * path always fits; the check of the result keeps -Wformat-truncation
 * (and any later change) honest. */
static void hsm__sock_path(char *out, size_t cap, const char *run_dir, unsigned gen, pid_t pid) {
  int n = snprintf(out, cap, "%s/p11-%u-%d.sock", run_dir, gen, (int)pid);
  if (n < 0 || (size_t)n >= cap) out[0] = '\0';
}

/* Dispositions that survive fork and exec: the keeper ignores what a
 * terminal or a process-group kill would send (it lives and dies with the
 * caller, through the ctl pipe and PDEATHSIG), the server gets defaults. */
static void hsm__set_signals(void (*handler)(int)) {
  static const int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], handler);
}

/* The server child: its own process group (so one kill reaches its
 * per-connection children), the server's uid, then exec.  Failures go to
 * the keeper through errfd as {step, errno}. */
static _Noreturn void hsm__server_exec(struct hsm_server *s, pid_t keeper, int errfd) {
  int msg[2] = {0, 0};
  char sock[HSM_SUN_MAX + 1];
  hsm__sock_path(sock, sizeof sock, s->run_dir, s->gen, getpid());
  setpgid(0, 0);
  hsm__set_signals(SIG_DFL);
  if (s->drop && (initgroups(s->server_user, s->server_gid) != 0 ||
                  setgid(s->server_gid) != 0 || setuid(s->server_uid) != 0)) {
    msg[0] = 1;
    goto fail;
  }
  /* After the uid change, which clears it. */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != keeper) _exit(1);
  setenv("SOFTHSM2_CONF", s->softhsm_conf, 1);
  char *argv[] = {"p11-kit", "server", "-f", "-n", sock, "--provider", s->module,
                  s->token_uri, NULL, NULL, NULL};
  if (s->client_user[0]) { /* --user goes before the positional token */
    argv[7] = "-u";
    argv[8] = s->client_user;
    argv[9] = s->token_uri;
  }
  execvp(s->p11kit[0] ? s->p11kit : "p11-kit", argv);
  if (!s->p11kit[0] && errno == ENOENT) execv("/usr/bin/p11-kit", argv);
fail:
  msg[1] = errno;
  ssize_t w = write(errfd, msg, sizeof msg);
  (void)w;
  _exit(127);
}

/* Kill the generation's process group (while its leader, dead or alive,
 * is unreaped, so the pgid cannot have been reused), reap the leader,
 * remove its socket.  Returns the wait status. */
static int hsm__retire(struct hsm_server *s) {
  int status = 0;
  kill(-s->pid, SIGKILL);
  while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (s->pidfd >= 0) close(s->pidfd);
  unlink(s->sock);
  s->pid = 0;
  s->pidfd = -1;
  return status;
}

static int hsm__spawn(struct hsm_server *s, char *why, size_t cap) {
  int ep[2];
  if (pipe2(ep, O_CLOEXEC) != 0) {
    snprintf(why, cap, "cannot create a pipe: %s", strerror(errno));
    return SG_EIO;
  }
  pid_t keeper = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    close(ep[0]);
    hsm__server_exec(s, keeper, ep[1]);
  }
  int e = errno;
  close(ep[1]);
  if (pid < 0) {
    close(ep[0]);
    snprintf(why, cap, "cannot fork the token server: %s", strerror(e));
    return SG_EIO;
  }
  setpgid(pid, pid); /* as in the child: whichever runs first */
  s->pid = pid;
  s->pidfd = pidfd_open(pid, 0);
  s->started_ms = hsm__now_ms();
  hsm__sock_path(s->sock, sizeof s->sock, s->run_dir, s->gen, pid);
  int msg[2];
  ssize_t n;
  while ((n = read(ep[0], msg, sizeof msg)) < 0 && errno == EINTR) {
  }
  close(ep[0]);
  if (n == (ssize_t)sizeof msg) { /* EOF instead means exec succeeded */
    snprintf(why, cap, msg[0] ? "cannot switch to user %s: %s" : "cannot run %s: %s",
             msg[0] ? s->server_user : s->p11kit[0] ? s->p11kit : "p11-kit", strerror(msg[1]));
    return msg[1] == ENOENT ? SG_ENOTFOUND : SG_EIO;
  }
  if (s->pidfd < 0) {
    snprintf(why, cap, "cannot watch the token server: %s", strerror(errno));
    return SG_EIO;
  }
  return 0;
}

/* Wait up to ms (-1: forever) for the caller to let go or the server to
 * die. */
static int hsm__poll(const struct hsm_server *s, int ms) {
  struct pollfd pfd[2] = {{s->ctl_fd, POLLIN, 0}, {s->pidfd, POLLIN, 0}};
  if (poll(pfd, 2, ms) <= 0) return HSM_TIMEOUT;
  if (pfd[0].revents) return HSM_STOP; /* EOF or error: the caller is gone */
  return pfd[1].revents ? HSM_DIED : HSM_TIMEOUT;
}

static void hsm__describe(char *out, size_t cap, int status) {
  if (WIFSIGNALED(status)) snprintf(out, cap, "was killed by signal %d", WTERMSIG(status));
  else snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

/* Judged by connecting, as clients will: the socket file can exist before
 * the server listens, and a pid says nothing about accept(). */
static int hsm__await_ready(struct hsm_server *s, char *why, size_t cap) {
  long long deadline = s->started_ms + HSM_READY_MS;
  while (hsm__connect(s->sock) != 0) {
    int ev = hsm__poll(s, HSM_POLL_MS);
    if (ev == HSM_STOP) return HSM_STOP;
    if (ev == HSM_DIED) {
      pid_t pid = s->pid;
      char how[64];
      hsm__describe(how, sizeof how, hsm__retire(s));
      snprintf(why, cap, "token server (pid %d) %s before accepting connections (see its "
               "messages above)", (int)pid, how);
      return SG_EIO;
    }
    if (hsm__now_ms() >= deadline) {
      snprintf(why, cap, "token server (pid %d) did not accept connections on %s within %d ms",
               (int)s->pid, s->sock, HSM_READY_MS);
      return SG_ETIMEDOUT;
    }
  }
  return 0;
}

/* server.pid, then the symlink: both replaced by rename(), so a reader
 * sees the old generation or the new one, never nothing.  With a separate
 * server user, RUN_DIR is that user's: the root keeper never follows or
 * trusts what it finds there (unlink first, O_EXCL|O_NOFOLLOW, and the
 * socket must be a socket of the server user before it is given away). */
static int hsm__publish(struct hsm_server *s, char *why, size_t cap) {
  char tmp[HSM_SUN_MAX + 32], pidfile[HSM_SUN_MAX + 32];
  struct stat st;
  errno = 0;
  if (s->drop && (lstat(s->sock, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != s->server_uid ||
                  st.st_nlink != 1 || lchown(s->sock, s->client_uid, s->client_gid) != 0)) {
    snprintf(why, cap, "cannot give %s to uid %u: %s", s->sock, (unsigned)s->client_uid,
             errno ? strerror(errno) : "not the server's socket");
    return SG_EIO;
  }
  snprintf(pidfile, sizeof pidfile, "%s/server.pid", s->run_dir);
  snprintf(tmp, sizeof tmp, "%s/server.pid.tmp", s->run_dir);
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  char line[32];
  int n = snprintf(line, sizeof line, "%d\n", (int)s->pid);
  bool ok = fd >= 0 && write(fd, line, (size_t)n) == n;
  if (fd >= 0 && close(fd) != 0) ok = false;
  ok = ok && rename(tmp, pidfile) == 0;
  snprintf(tmp, sizeof tmp, "%s/current.tmp", s->run_dir);
  unlink(tmp);
  ok = ok && symlink(strrchr(s->sock, '/') + 1, tmp) == 0 && rename(tmp, s->current) == 0;
  if (!ok) {
    snprintf(why, cap, "cannot publish the token server in %s: %s", s->run_dir, strerror(errno));
    return SG_EIO;
  }
  return 0;
}

/* Spawn the next generation and publish it once it accepts.  A failed
 * generation is retired here; on HSM_STOP it is left to hsm__shutdown. */
static int hsm__start_gen(struct hsm_server *s, char *why, size_t cap) {
  s->gen++;
  int rc = hsm__spawn(s, why, cap);
  if (!rc) rc = hsm__await_ready(s, why, cap);
  if (!rc) rc = hsm__publish(s, why, cap);
  if (rc < 0 && s->pid) hsm__retire(s);
  return rc;
}

/* ---- keeper: life cycle ------------------------------------------------ */

/* SIGTERM gives the server the chance to remove its socket; its
 * per-connection children get it too (same process group). */
static void hsm__shutdown(struct hsm_server *s) {
  if (s->pid) {
    kill(-s->pid, SIGTERM);
    long long deadline = hsm__now_ms() + HSM_GRACE_MS;
    struct pollfd pfd = {s->pidfd, POLLIN, 0};
    while (hsm__now_ms() < deadline && poll(&pfd, 1, HSM_POLL_MS) == 0) {
    }
    hsm__retire(s);
  }
  char path[HSM_SUN_MAX + 32];
  snprintf(path, sizeof path, "%s/server.pid", s->run_dir);
  unlink(path);
  unlink(s->current);
}

/* Returns true if the caller let go while we slept. */
static bool hsm__pause(struct hsm_server *s, int ms) {
  long long deadline = hsm__now_ms() + ms;
  for (long long left = ms; left > 0; left = deadline - hsm__now_ms())
    if (hsm__poll(s, (int)left) == HSM_STOP) return true;
  return false;
}

/* Restart the server whenever it dies, until the caller lets go. */
static void hsm__supervise(struct hsm_server *s) {
  int delay = HSM_BACKOFF_MIN_MS;
  char why[512];
  for (;;) {
    int ev;
    while ((ev = hsm__poll(s, -1)) == HSM_TIMEOUT) {
    }
    if (ev == HSM_STOP) return;
    pid_t pid = s->pid;
    if (hsm__now_ms() - s->started_ms >= HSM_STABLE_MS) delay = HSM_BACKOFF_MIN_MS;
    hsm__describe(why, sizeof why, hsm__retire(s));
    log_warn("hsm-server: token server (pid %d) %s; restarting in %d ms", (int)pid, why, delay);
    int rc;
    do {
      if (hsm__pause(s, delay)) return;
      delay = delay * 2 > HSM_BACKOFF_MAX_MS ? HSM_BACKOFF_MAX_MS : delay * 2;
      rc = hsm__start_gen(s, why, sizeof why);
      if (rc == HSM_STOP) return;
      if (rc < 0) log_warn("hsm-server: %s; retrying in %d ms", why, delay);
    } while (rc < 0);
    log_info("hsm-server: token server (pid %d) listening on %s", (int)s->pid, s->sock);
  }
}

/* Keep stdin/stdout on /dev/null, stderr for logs, ctl as fd 3 and ready
 * as fd 4; close everything else the caller had open (listening sockets,
 * the instance lock), which the keeper must not keep alive. */
static void hsm__keeper_fds(struct hsm_server *s) {
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  int ctl = fcntl(s->ctl_fd, F_DUPFD_CLOEXEC, 10);
  int ready = fcntl(s->ready_fd, F_DUPFD_CLOEXEC, 10);
  if (null < 0 || ctl < 0 || ready < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
      dup3(ctl, 3, O_CLOEXEC) < 0 || dup3(ready, 4, O_CLOEXEC) < 0)
    _exit(1);
  fcntl(0, F_SETFD, 0); /* in case open() returned 0 or 1 itself */
  fcntl(1, F_SETFD, 0);
  close_range(5, ~0U, 0);
  s->ctl_fd = 3;
  s->ready_fd = 4;
}

/* Remove sockets of servers that died without unlinking them (SIGKILL):
 * only those nobody listens on any more. */
static void hsm__sweep(const struct hsm_server *s) {
  DIR *d = opendir(s->run_dir);
  if (!d) return;
  struct dirent *e;
  char path[HSM_SUN_MAX + 300];
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n < 9 || strncmp(e->d_name, "p11-", 4) != 0 || strcmp(e->d_name + n - 5, ".sock") != 0)
      continue;
    snprintf(path, sizeof path, "%s/%s", s->run_dir, e->d_name);
    if (hsm__connect(path) == -ECONNREFUSED) unlink(path);
  }
  closedir(d);
}

/* One message to the caller: a byte holding -sgerr (0 = up), then text. */
static void hsm__report(struct hsm_server *s, int rc, const char *why) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "%c%s", (char)-rc, why);
  ssize_t w = write(s->ready_fd, msg, n < (int)sizeof msg ? (size_t)n + 1 : sizeof msg);
  (void)w;
  close(s->ready_fd);
  s->ready_fd = -1;
}

static _Noreturn void hsm__keeper_main(struct hsm_server *s, pid_t caller) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != caller) _exit(1);
  hsm__keeper_fds(s);
  /* The caller's handlers may write to self-pipes just closed. */
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
  hsm__set_signals(SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  hsm__sweep(s);
  char why[512] = "";
  int rc = hsm__start_gen(s, why, sizeof why);
  if (rc < 0) {
    hsm__report(s, rc, why);
    _exit(1);
  }
  if (rc == 0) {
    hsm__report(s, 0, "");
    hsm__supervise(s);
  }
  hsm__shutdown(s);
  _exit(0); /* not exit(): the caller's atexit handlers and stdio are not ours */
}

/* ---- caller side: public API ------------------------------------------- */

static int hsm__fork_keeper(struct hsm_server *s, char *err, size_t errlen) {
  int ctl[2], ready[2];
  if (pipe2(ctl, O_CLOEXEC) != 0) goto fail;
  if (pipe2(ready, O_CLOEXEC) != 0) {
    close(ctl[0]);
    close(ctl[1]);
    goto fail;
  }
  pid_t caller = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    close(ctl[1]);
    close(ready[0]);
    s->ctl_fd = ctl[0];
    s->ready_fd = ready[1];
    hsm__keeper_main(s, caller);
  }
  int e = errno;
  close(ctl[0]);
  close(ready[1]);
  s->ctl_fd = ctl[1];
  s->ready_fd = ready[0];
  if (pid > 0) {
    s->keeper = pid;
    return 0;
  }
  errno = e;
fail:
  snprintf(err, errlen, "cannot start the token server keeper: %s", strerror(errno));
  return SG_EIO;
}

static int hsm__await_keeper(struct hsm_server *s, int timeout_ms, char *err, size_t errlen) {
  struct pollfd pfd = {s->ready_fd, POLLIN, 0};
  long long deadline = hsm__now_ms() + timeout_ms;
  int n = 0;
  for (long long left = timeout_ms; n == 0 && left > 0; left = deadline - hsm__now_ms()) {
    n = poll(&pfd, 1, (int)left);
    if (n < 0 && errno == EINTR) n = 0;
  }
  if (n <= 0) {
    snprintf(err, errlen, "token server did not accept connections in %s within %d ms",
             s->run_dir, timeout_ms);
    return SG_ETIMEDOUT;
  }
  char msg[512] = "";
  ssize_t r = read(s->ready_fd, msg, sizeof msg - 1);
  if (r <= 0) {
    snprintf(err, errlen, "token server keeper (pid %d) exited before the server started",
             (int)s->keeper);
    return SG_EIO;
  }
  if (msg[0] == 0) return 0;
  snprintf(err, errlen, "%s", msg + 1);
  return -(int)(unsigned char)msg[0];
}

int hsm_server_start(const struct hsm_server_params *p, int timeout_ms, struct hsm_server **out,
                     char *err, size_t errlen) {
  *out = NULL;
  struct hsm_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return SG_ENOMEM;
  }
  s->ctl_fd = s->ready_fd = s->pidfd = -1;
  int rc = hsm__plan(s, p, err, errlen);
  if (!rc) rc = hsm__make_run_dir(s, err, errlen);
  if (!rc) rc = hsm__fork_keeper(s, err, errlen);
  if (!rc) rc = hsm__await_keeper(s, timeout_ms, err, errlen);
  if (rc) {
    hsm_server_stop(s); /* also reaps a keeper that failed or was too slow */
    return rc;
  }
  close(s->ready_fd);
  s->ready_fd = -1;
  *out = s;
  return 0;
}

const char *hsm_server_address(const struct hsm_server *s) { return s->address; }

pid_t hsm_server_keeper_pid(const struct hsm_server *s) { return s->keeper; }

bool hsm_server_alive(const struct hsm_server *s) { return hsm__connect(s->current) == 0; }

int hsm_server_wait(const struct hsm_server *s, int timeout_ms) {
  long long deadline = hsm__now_ms() + timeout_ms;
  while (!hsm_server_alive(s)) {
    if (hsm__now_ms() >= deadline) return SG_ETIMEDOUT;
    hsm__sleep_ms(HSM_POLL_MS);
  }
  return 0;
}

/* ECHILD means someone already reaped the keeper (a test that killed it). */
static void hsm__reap_keeper(pid_t pid) {
  long long deadline = hsm__now_ms() + HSM_STOP_CAP_MS;
  for (;;) {
    pid_t r = waitpid(pid, NULL, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return;
    if (hsm__now_ms() >= deadline) break;
    hsm__sleep_ms(10);
  }
  log_warn("hsm-server: keeper (pid %d) did not exit within %d ms; killing it", (int)pid,
           HSM_STOP_CAP_MS);
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

void hsm_server_stop(struct hsm_server *s) {
  if (!s) return;
  if (s->ready_fd >= 0) close(s->ready_fd);
  if (s->ctl_fd >= 0) close(s->ctl_fd); /* the keeper sees EOF and shuts down */
  if (s->keeper > 0) hsm__reap_keeper(s->keeper);
  free(s);
}
