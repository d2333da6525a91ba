#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/state.h"
#include "proxy/tls.h"

static const char usage[] = "Usage: keyward ca export\n"
                            "\n"
                            "Prints the certificate of keyward's CA (PEM), creating the CA in the state\n"
                            "directory on first use. Clients of `keyward proxy` must trust it, e.g.:\n"
                            "  keyward ca export > keyward-ca.pem\n"
                            "  curl --proxy http://127.0.0.1:8080 --cacert keyward-ca.pem https://...\n"
                            "The CA key (ca-key.pem, mode 0600) never leaves the state directory.\n";

int cmd_ca(int argc, char **argv)
{
	if (cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 2 || strcmp(argv[1], "export") != 0) {
		fputs(usage, stderr);
		return 2;
	}
	char dir[PATH_MAX], err[512];
	if (state_dir(dir, sizeof(dir), true, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	struct tls_ca *ca;
	if (tls_ca_load_or_create(dir, &ca, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	char *pem = tls_ca_cert_pem(ca);
	tls_ca_free(ca);
	if (!pem)
		return 1;
	fputs(pem, stdout);
	free(pem);
	return 0;
}
