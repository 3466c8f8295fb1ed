/* sgerr - see sgerr.h. */
#include "core/sgerr.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

const char *sgerr_str(int code) {
  switch (code) {
    case SG_OK: return "success";
    case SG_ENOMEM: return "out of memory";
    case SG_EIO: return "input/output error";
    case SG_EINVAL: return "invalid argument";
    case SG_ECONFIG: return "invalid configuration";
    case SG_ECORRUPT: return "corrupt record";
    case SG_ENOSPC: return "insufficient disk space";
    case SG_ELIMIT: return "limit exceeded";
    case SG_ETIMEDOUT: return "timed out";
    case SG_ENOTFOUND: return "not found";
    case SG_EEXIST: return "already exists";
    case SG_EBUSY: return "busy";
    case SG_ETEMP: return "temporary failure";
    case SG_EPERM: return "permission denied";
    case SG_EPROTO: return "protocol error";
    case SG_ETOOBIG: return "too big";
    case SG_ESYNTAX: return "syntax error";
  }
  return "unknown error";
}

int sgerr_from_errno(int err) {
  switch (err) {
    case 0: return SG_OK;
    case ENOMEM: return SG_ENOMEM;
    case ENOSPC: case EDQUOT: return SG_ENOSPC;
    case ENOENT: return SG_ENOTFOUND;
    case EEXIST: return SG_EEXIST;
    case EACCES: case EPERM: return SG_EPERM;
    case EAGAIN: case EINTR: return SG_ETEMP;
    case ETIMEDOUT: return SG_ETIMEDOUT;
    case EINVAL: return SG_EINVAL;
    default: return SG_EIO;
  }
}

int sgerr_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}
