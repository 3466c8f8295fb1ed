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

static inline void tool_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

#endif
