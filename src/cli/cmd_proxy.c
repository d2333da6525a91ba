#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "proxy/proxy.h"

static const char usage[] = "Usage: keyward proxy --policy FILE --listen ADDR [--listen ADDR]... [OPTIONS]\n"
                            "\n"
                            "Runs the deny-by-default HTTP(S) forward proxy. Clients send absolute-form\n"
                            "requests for http:// and CONNECT for https://; tunnels are intercepted with\n"
                            "certificates from keyward's CA (see `keyward ca export`). A request passes\n"
                            "only if a route of the policy allows its host, port, method and normalised\n"
                            "path; only then is the route's credential attached. Every decision is\n"
                            "written to a hash-chained audit log.\n"
                            "\n"
                            "Options:\n"
                            "  -p, --policy FILE     the policy (YAML, see docs/policy.md); required\n"
                            "  -l, --listen ADDR     HOST:PORT, [IPV6]:PORT or unix:PATH; repeatable;\n"
                            "                        port 0 picks a free port (printed at start)\n"
                            "  -a, --audit FILE      audit log (default: the policy's audit:, else\n"
                            "                        audit.jsonl in the state directory)\n"
                            "      --resolve HOST:ADDRESS\n"
                            "                        dial ADDRESS for HOST instead of asking DNS\n"
                            "                        (repeatable; private addresses still need\n"
                            "                        allow_private: true on the route)\n"
                            "  -w, --workers N       event loops (default: one per CPU)\n"
                            "  -v, --verbose         log more (repeat for debug)\n"
                            "  -h, --help            show this help\n"
                            "\n"
                            "Signals: SIGHUP reloads the policy (a broken one is reported and the\n"
                            "running one kept); SIGTERM or SIGINT finish requests in flight, then exit.\n";

bool cli_add_resolve(struct proxy_options *o, const char *arg, const char *cmd)
{
	if (o->n_resolve >= PROXY_MAX_RESOLVE) {
		fprintf(stderr, "keyward %s: at most %d --resolve\n", cmd, PROXY_MAX_RESOLVE);
		return false;
	}
	o->resolve[o->n_resolve++] = arg;
	return true;
}

int cmd_proxy(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "listen", required_argument, NULL, 'l' },
		{ "audit", required_argument, NULL, 'a' },
		{ "resolve", required_argument, NULL, 'r' },
		{ "workers", required_argument, NULL, 'w' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct proxy_options o = { 0 };
	int verbose = 0, c;

	while ((c = getopt_long(argc, argv, "p:l:a:w:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			o.policy_path = optarg;
			break;
		case 'l':
			if (o.n_listen >= PROXY_MAX_LISTEN) {
				fprintf(stderr, "keyward proxy: at most %d --listen\n", PROXY_MAX_LISTEN);
				return 2;
			}
			o.listen[o.n_listen++] = optarg;
			break;
		case 'a':
			o.audit_path = optarg;
			break;
		case 'r':
			if (!cli_add_resolve(&o, optarg, "proxy"))
				return 2;
			break;
		case 'w': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 64) {
				fprintf(stderr, "keyward proxy: --workers takes a number from 1 to 64\n");
				return 2;
			}
			o.workers = (int)n;
			break;
		}
		case 'v':
			verbose++;
			break;
		case 'q':
			verbose = -1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs("see: keyward proxy --help\n", stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "keyward proxy: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (!o.policy_path || o.n_listen == 0) {
		fprintf(stderr, "keyward proxy: --policy and --listen are required (see keyward proxy --help)\n");
		return 2;
	}
	log_set_level(verbose < 0 ? LOG_WARN : verbose >= 1 ? LOG_DEBUG : LOG_INFO);
	int r = proxy_main(&o);
	if (r == -EINVAL)
		return 2;
	return r < 0 ? 1 : 0;
}
