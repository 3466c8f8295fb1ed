/*
 * sgerr - the one error convention of sealgate.
 *
 * Every public function in the project returns 0 on success or one of the
 * negative codes below; nothing returns a positive errno.  sgerr_str() turns
 * a code into a short English phrase for logs and admin output.  Callers
 * that need detail (a config line, an SMTP reply) get it through an
 * explicit out-parameter, never through a global.
 */
#ifndef SEALGATE_SGERR_H
#define SEALGATE_SGERR_H

#include <stddef.h>

enum sgerr {
  SG_OK = 0,
  SG_ENOMEM = -1,     /* allocation failed */
  SG_EIO = -2,        /* system call failed; errno-level detail was logged */
  SG_EINVAL = -3,     /* bad argument or malformed input */
  SG_ECONFIG = -4,    /* configuration invalid */
  SG_ECORRUPT = -5,   /* durable record failed its checks */
  SG_ENOSPC = -6,     /* disk (or its reserve) full */
  SG_ELIMIT = -7,     /* a configured limit was exceeded */
  SG_ETIMEDOUT = -8,  /* operation timed out */
  SG_ENOTFOUND = -9,  /* named object does not exist */
  SG_EEXIST = -10,    /* object already exists */
  SG_EBUSY = -11,     /* resource held by someone else (e.g. instance lock) */
  SG_ETEMP = -12,     /* temporary failure: retry later */
  SG_EPERM = -13,     /* permission denied */
  SG_EPROTO = -14,    /* peer violated the protocol */
  SG_ETOOBIG = -15,   /* input larger than allowed */
  SG_ESYNTAX = -16,   /* syntax error in input */
};

/* Static, never NULL; unknown codes give "unknown error". */
const char *sgerr_str(int code);

/* Write a formatted reason into err (errlen bytes, may be 0) and return
 * code: the one-line way every module fills its err out-parameter. */
int sgerr_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Map an errno value (positive) to the closest sealgate code. */
int sgerr_from_errno(int err);

#endif
