/* policy_cli: the `sluice check-config` and `sluice explain` commands. */
#ifndef SLUICE_POLICY_CLI_H
#define SLUICE_POLICY_CLI_H

#include <stdio.h>

/* `sluice check-config [--config] FILE` with argv[0] = "check-config": loads FILE as `sluice
 * run` would (every key, the policy, each list, regex and network) and writes a summary to
 * out. Errors go to err as "sluice: FILE:LINE: message". Returns the exit status: 0 valid,
 * 1 invalid, 2 usage error. */
int policy_cli_check_config(int argc, char **argv, FILE *out, FILE *err);

/* `sluice explain --config FILE [--sni NAME] [--host NAME] [--client IP] [--dst IP:PORT]
 * [--alpn LIST] [--json] [--method M --path P --header H --status N --content-type T]` with
 * argv[0] = "explain": prints the decision for that flow and the rule behind it ("rule" is
 * null in JSON when the default decided; "how" is given for a block). Returns the exit
 * status: 0, 1 when the config is invalid, 2 usage error. */
int policy_cli_explain(int argc, char **argv, FILE *out, FILE *err);

#endif
