/*
 * hsm_server - starts and supervises the instance's token server
 * (`p11-kit server` serving the SoftHSM2 token), so the gateway process
 * never maps key material.
 *
 * Process layout: hsm_server_start() forks a small keeper process while
 * the caller is still single-threaded (call it before any thread exists).
 * The keeper spawns `p11-kit server -f -n SOCKET --provider SOFTHSM2
 * pkcs11:token=LABEL` with SOFTHSM2_CONF set, restarts it when it dies
 * (backoff 100 ms doubling to 5 s), and kills it (and its per-connection
 * children, its process group) when the caller goes away: the keeper
 * watches a pipe whose write end only the caller holds, and both keeper
 * and server carry PR_SET_PDEATHSIG.  Each start listens on a new socket
 * path, RUN_DIR/p11-GEN-PID.sock, and the keeper then repoints the symlink
 * RUN_DIR/current at it (rename over it, atomic).  Clients use the constant
 * address "unix:path=RUN_DIR/current": an orphaned server that unlinks its
 * own socket on exit cannot cut off its successor.  Liveness is judged by
 * connecting to the socket, never by a pid.
 *
 * Privileges: when the caller is root and params.server_user is set, the
 * keeper stays root (it does nothing but spawn and wait) and drops to
 * server_user itself in the server's child before exec (initgroups,
 * setgid, setuid, then PR_SET_PDEATHSIG, which a setuid would clear).
 * p11-kit's own --run-as-user is not used: it cannot chown the socket
 * after dropping root.  The server gets --user for client_uid (p11-kit
 * checks the peer's uid after accept), and the keeper chowns each new
 * socket to client_uid:client_gid before repointing RUN_DIR/current.
 * RUN_DIR and the token folder are then owned by server_user; the gateway
 * keeps only the PIN and the socket.  Without root, keeper, server and
 * gateway share one uid.
 *
 * Trusts: its params (from the validated config).  Logs go to stderr with
 * the "hsm-server:" prefix.
 */
#ifndef SEALGATE_HSM_SERVER_H
#define SEALGATE_HSM_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

struct hsm_server_params {
  const char *run_dir;      /* created 0700 (0711 when server_user is set) */
  const char *softhsm_conf; /* the instance's softhsm2.conf */
  const char *module;       /* SoftHSM2 module path (NULL = HSM_SOFTHSM2_MODULE) */
  const char *token;        /* token label */
  const char *p11kit;       /* p11-kit binary (NULL = "p11-kit" from PATH,
                               then /usr/bin/p11-kit) */
  const char *server_user;  /* root only: run the server as this user; NULL = caller */
  uid_t client_uid;         /* root only: the only uid allowed to connect */
  gid_t client_gid;
};

struct hsm_server;

/* Fork the keeper and start the first server; returns once the first
 * server accepts connections (or after timeout_ms, SG_ETIMEDOUT).  *out is
 * the caller's until hsm_server_stop().  Must be called before the caller
 * creates threads. */
int hsm_server_start(const struct hsm_server_params *p, int timeout_ms,
                     struct hsm_server **out, char *err, size_t errlen);

/* "unix:path=RUN_DIR/current": the P11_KIT_SERVER_ADDRESS for clients.
 * Owned by s. */
const char *hsm_server_address(const struct hsm_server *s);

/* The keeper's pid (tests kill the server through it: the current
 * server's pid is in RUN_DIR/server.pid). */
pid_t hsm_server_keeper_pid(const struct hsm_server *s);

/* True if a connection to the current socket succeeds now. */
bool hsm_server_alive(const struct hsm_server *s);

/* Wait up to timeout_ms for a live server (after a restart). */
int hsm_server_wait(const struct hsm_server *s, int timeout_ms);

/* Tell the keeper to stop the server and exit; reap it; free s. */
void hsm_server_stop(struct hsm_server *s);

#endif
