/*
 * sealgate - the daemon's entry point: options, then daemon_run().
 * Exit codes: 0 clean stop, 1 failure (config, lock, bind), 2 bad usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#ifdef SEALGATE_TCMALLOC
#include <gperftools/malloc_extension_c.h>
#endif

#include "core/daemon.h"
#include "core/log.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: sealgate -c CONFIG [-v]\n"
          "  -c, --config FILE   sealgate.yaml of the instance (required)\n"
          "  -v, --verbose       debug logging\n"
          "      --help          this text\n"
          "      --version       print the version\n"
          "Runs in the foreground and logs to stderr. SIGTERM drains and stops;\n"
          "SIGHUP reloads the configuration.\n");
}

/* tcmalloc keeps freed spans resident by default: a 50 MiB message passes
 * through buffers of that size a few times (received, its MIME entity,
 * the signed result), and each freed one would stay counted.  Giving freed
 * spans back at once keeps the peak near two copies (docs/OUTGOING.md). */
static void main_tune_allocator(void) {
#ifdef SEALGATE_TCMALLOC
  MallocExtension_SetNumericProperty("tcmalloc.aggressive_memory_decommit", 1);
#endif
}

int main(int argc, char **argv) {
  main_tune_allocator();
  static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                       {"verbose", no_argument, 0, 'v'},
                                       {"help", no_argument, 0, 'h'},
                                       {"version", no_argument, 0, 'V'},
                                       {0, 0, 0, 0}};
  const char *config = NULL;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":c:v", opts, NULL)) != -1) {
    switch (c) {
      case 'c': config = optarg; break;
      case 'v': log_set_level(LOG_LVL_DEBUG); break;
      case 'h': usage(stdout); return 0;
      case 'V': printf("sealgate %s\n", SEALGATE_VERSION); return 0;
      case ':': fprintf(stderr, "sealgate: option %s needs a value\n", argv[optind - 1]); return 2;
      default: fprintf(stderr, "sealgate: unknown option %s (try --help)\n", argv[optind - 1]); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "sealgate: unexpected argument '%s' (try --help)\n", argv[optind]);
    return 2;
  }
  if (!config) {
    fprintf(stderr, "sealgate: -c CONFIG is required (try --help)\n");
    return 2;
  }
  return daemon_run(config);
}
