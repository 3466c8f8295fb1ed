/*
 * json - the one JSON string writer of the command-line tools (sealctl's
 * --json output, sealload's --json report): s as a quoted JSON string,
 * with '"' and '\' escaped and every byte outside printable ASCII written
 * as \u00XX (so a name or address from a file or a peer can never break
 * the output or reach the terminal raw).  Header-only: each tool is linked
 * on its own.
 */
#ifndef SEALGATE_TOOLS_JSON_H
#define SEALGATE_TOOLS_JSON_H

#include <stdio.h>

#include <string.h>

/* n bytes at p (a NUL among them is escaped like any control byte). */
static inline void tool_json_mem(FILE *f, const char *p, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

/* A NUL-terminated string; NULL is written as "". */
static inline void tool_json_str(FILE *f, const char *s) { tool_json_mem(f, s ? s : "", s ? strlen(s) : 0); }

#endif
