/*
 * spooldump - print spool files (like Postfix's postcat).
 *
 *   spooldump [-d] [-q] FILE...
 *
 * For each file: its envelope and whether it passed every check of
 * core/spool_record (magic, version, lengths, order, CRC, end marker).
 * -d also writes the message data, -q prints only "FILE: ok" per valid file.
 * A corrupt file is reported as "FILE: corrupt: REASON" and an unreadable
 * one as "FILE: unreadable: REASON", both on stderr.
 * Exit status: 0 all valid, 1 any corrupt or unreadable, 2 bad usage.
 *
 * Untrusted input: the files (they may be torn or damaged; the parser
 * rejects them) and every string inside them, which is printed through
 * log_safe() so a crafted envelope cannot write control sequences to the
 * terminal.  The data printed by -d is written raw, as postcat does: it is
 * what the admin asked to see.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sgerr.h"
#include "core/spool_record.h"

#ifndef SEALGATE_VERSION
#define SEALGATE_VERSION "unknown"
#endif

struct opts {
  int data;
  int quiet;
};

static void usage(FILE *fp) {
  fprintf(fp,
          "usage: spooldump [-d] [-q] FILE...\n"
          "Print sealgate spool files and check their integrity.\n"
          "  -d, --data     also print the message data\n"
          "  -q, --quiet    print only whether each file is valid\n"
          "  -h, --help     show this help\n"
          "  -V, --version  show the version\n"
          "Exit status: 0 all files valid, 1 a file is corrupt or unreadable, 2 usage.\n");
}

/* A whole file, mapped read-only (spool files may be up to 4 GiB). */
struct image {
  void *p;
  size_t len;
};

static int map_file(const char *path, struct image *img, const char **why_out) {
  img->p = NULL;
  img->len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) goto fail;
  struct stat st;
  if (fstat(fd, &st) < 0) goto fail_fd;
  if (!S_ISREG(st.st_mode)) {
    errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    goto fail_fd;
  }
  img->len = (size_t)st.st_size;
  if (img->len > 0) {
    img->p = mmap(NULL, img->len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (img->p == MAP_FAILED) {
      img->p = NULL;
      goto fail_fd;
    }
  }
  close(fd);
  return 0;
fail_fd:;
  int e = errno;
  close(fd);
  errno = e;
fail:
  *why_out = strerror(errno);
  return -1;
}

static void unmap_file(struct image *img) {
  if (img->p) munmap(img->p, img->len);
}

static const char *safe(char out[1024], const char *s) {
  return log_safe(out, 1024, s ? s : "", s ? strlen(s) : 0);
}

static void print_time(uint64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char when[64] = "out of range";
  if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  printf("arrival:     %s.%03uZ (%llu ms)\n", when, (unsigned)(ms % 1000), (unsigned long long)ms);
}

static void print_flags(uint32_t flags) {
  printf("flags:       0x%08x", flags);
  if (flags & SPOOL_F_8BITMIME) printf(" 8BITMIME");
  if (flags & SPOOL_F_DSN) printf(" DSN");
  if (flags & SPOOL_F_PLAIN) printf(" PLAIN");
  if (flags & SPOOL_F_SMIME) printf(" SMIME");
  printf("\n");
}

static void print_envelope(const char *path, const struct image *img,
                           const struct spool_envelope *env, size_t data_len) {
  char b[1024];
  const unsigned char *p = img->p;
  printf("*** %s ***\n", safe(b, path));
  printf("version:     %u\n", (unsigned)(p[8] | p[9] << 8));
  printf("queue_id:    %s\n", safe(b, env->queue_id));
  print_time(env->arrival_ms);
  printf("sender:      <%s>\n", safe(b, env->sender));
  for (size_t i = 0; i < env->n_rcpts; i++) printf("recipient:   <%s>\n", safe(b, env->rcpts[i]));
  printf("listener:    %s\n", safe(b, env->listener));
  printf("next_hop:    %s\n", safe(b, env->next_hop));
  print_flags(env->flags);
  printf("client:      %s\n", safe(b, env->client));
  printf("data_length: %zu\n", data_len);
  printf("crc:         ok\n");
}

/* Write errors are caught once, by the fflush/ferror check in main(). */
static void print_data(const char *data, size_t len) {
  printf("*** MESSAGE DATA ***\n");
  fwrite(data, 1, len, stdout);
  if (len && data[len - 1] != '\n') printf("\n");
  printf("*** END OF MESSAGE DATA ***\n");
}

/* 0 if the file is valid, 1 if not (reported on stderr). */
static int dump_one(const char *path, const struct opts *o) {
  char b[1024];
  struct image img;
  const char *why = NULL;
  if (map_file(path, &img, &why)) {
    fprintf(stderr, "%s: unreadable: %s\n", safe(b, path), why);
    return 1;
  }
  struct spool_envelope env;
  const char *data;
  size_t data_len;
  int rc = spool_record_parse(img.p, img.len, &env, &data, &data_len, &why);
  if (rc) {
    fprintf(stderr, "%s: corrupt: %s\n", safe(b, path), why ? why : sgerr_str(rc));
    unmap_file(&img);
    return 1;
  }
  if (o->quiet) {
    printf("%s: ok\n", safe(b, path));
  } else {
    print_envelope(path, &img, &env, data_len);
    if (o->data) print_data(data, data_len);
  }
  spool_envelope_free(&env);
  unmap_file(&img);
  return 0;
}

/* Parse options; returns the index of the first file, or -1 after printing
 * help or version (exit 0), or -2 on a usage error (exit 2). */
static int parse_args(int argc, char **argv, struct opts *o) {
  static const struct option longopts[] = {
      {"data", no_argument, NULL, 'd'},    {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},    {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  opterr = 0; /* our own one-line message below */
  int c;
  while ((c = getopt_long(argc, argv, "+dqhV", longopts, NULL)) != -1) {
    switch (c) {
      case 'd': o->data = 1; break;
      case 'q': o->quiet = 1; break;
      case 'h': usage(stdout); return -1;
      case 'V': printf("spooldump %s\n", SEALGATE_VERSION); return -1;
      default:
        if (optopt) fprintf(stderr, "spooldump: unknown option '-%c' (try --help)\n", optopt);
        else fprintf(stderr, "spooldump: unknown option '%s' (try --help)\n", argv[optind - 1]);
        return -2;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "spooldump: no files given (try --help)\n");
    return -2;
  }
  return optind;
}

int main(int argc, char **argv) {
  struct opts o = {0};
  int first = parse_args(argc, argv, &o);
  if (first == -1) return 0;
  if (first < 0) return 2;
  int bad = 0;
  for (int i = first; i < argc; i++) bad |= dump_one(argv[i], &o);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "spooldump: write error: %s\n", strerror(errno));
    return 1;
  }
  return bad ? 1 : 0;
}
