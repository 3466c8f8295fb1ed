/*
 * privs - give up root after binding: the instance's files become the
 * configured `user:`'s and the process switches to that uid and its groups.
 *
 * Called once by the daemon's main thread, after the listening sockets and
 * the control socket exist and before any client is served.  Trusts the
 * config (already validated); the user name is looked up in the system's
 * user database.  The token files (hsm/tokens) are left alone: they belong
 * to the token server's own user (DESIGN.md "Keys").
 */
#ifndef SEALGATE_PRIVS_H
#define SEALGATE_PRIVS_H

#include <stddef.h>

#include "core/config.h"

/*
 * If cfg->user is set and we run as root: chown the instance's folders and
 * files the gateway writes (instance folder, config, lock, control socket,
 * spool and key store trees, quarantine, the PIN file), then setgroups,
 * setgid, setuid, and check that root cannot be regained.  Not root: a
 * no-op when the user is ourselves, else an error.  Returns 0 or a negative
 * code with err set.
 */
int privs_drop(const struct config *cfg, char *err, size_t errlen);

#endif
