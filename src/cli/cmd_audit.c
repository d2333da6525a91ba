#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "cli/cli.h"

static const char usage[] = "Usage: keyward audit verify FILE\n"
                            "       keyward audit show FILE\n"
                            "\n"
                            "verify  checks that every record of an audit log is intact: each line is\n"
                            "        valid, numbered in sequence and carries the SHA-256 of the line\n"
                            "        before it. Names the first line that breaks the chain; exit 1 then.\n"
                            "show    prints the log for people, one line per decision, and verifies it.\n"
                            "\n"
                            "See docs/audit.md for the record format.\n";

int cmd_audit(int argc, char **argv)
{
	if (cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 3 || (strcmp(argv[1], "verify") != 0 && strcmp(argv[1], "show") != 0)) {
		fputs(usage, stderr);
		return 2;
	}
	int r = strcmp(argv[1], "verify") == 0 ? audit_verify(argv[2], stdout) : audit_show(argv[2], stdout);
	fflush(stdout);
	return r < 0 ? 1 : 0;
}
