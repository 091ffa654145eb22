/* ca_cli: the `sluice ca` subcommand — init and export, option parsing, operator messages. */
#include "ca.h"

#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CA_CLI_USAGE_ERROR 2
#define CA_CLI_RUNTIME_ERROR 1

/* Option values; the long options below map onto them. */
enum { CA_OPT_DIR = 256, CA_OPT_KEY, CA_OPT_NAME, CA_OPT_FORCE, CA_OPT_FORMAT, CA_OPT_OUT };

struct ca_cli_opts {
    const char *dir;
    const char *name; /* NULL: the default CN */
    const char *out;  /* NULL: standard output */
    enum ca_key_type key;
    enum ca_export_format format;
    bool force;
    bool has_format;
    bool help;
};

static const struct option ca_cli_init_options[] = {
    {"ca-dir", required_argument, NULL, CA_OPT_DIR},
    {"key", required_argument, NULL, CA_OPT_KEY},
    {"name", required_argument, NULL, CA_OPT_NAME},
    {"force", no_argument, NULL, CA_OPT_FORCE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option ca_cli_export_options[] = {
    {"ca-dir", required_argument, NULL, CA_OPT_DIR},
    {"format", required_argument, NULL, CA_OPT_FORMAT},
    {"out", required_argument, NULL, CA_OPT_OUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void ca_cli_usage_init(FILE *f)
{
    fprintf(f,
            "sluice ca init: create a new self-signed root CA (ca.pem, and ca.key mode 0600).\n"
            "  --ca-dir DIR     CA directory, created mode 0700 if missing (default: %s)\n"
            "  --key TYPE       key type: ec-p256, rsa-2048 or rsa-3072 (default: ec-p256)\n"
            "  --name CN        certificate common name, at most 64 characters\n"
            "                   (default: \"sluice CA <hostname> <YYYY-MM-DD>\")\n"
            "  --force          replace an existing CA (default: refuse)\n"
            "  -h, --help       show this help\n",
            ca_default_dir());
}

static void ca_cli_usage_export(FILE *f)
{
    fprintf(f,
            "sluice ca export: write the CA certificate (never the key) for clients to trust.\n"
            "  --ca-dir DIR     CA directory (default: %s)\n"
            "  --format FORMAT  pem, der (a .cer file) or p12 (certificate only, empty\n"
            "                   password) (required, no default)\n"
            "  --out FILE       output file (default: standard output)\n"
            "  -h, --help       show this help\n",
            ca_default_dir());
}

static void ca_cli_usage(FILE *f)
{
    fprintf(f, "Usage: sluice ca init [--ca-dir DIR] [--key TYPE] [--name CN] [--force]\n"
               "       sluice ca export [--ca-dir DIR] --format pem|der|p12 [--out FILE]\n\n");
    ca_cli_usage_init(f);
    fprintf(f, "\n");
    ca_cli_usage_export(f);
}

static int ca_cli_format_parse(const char *s, enum ca_export_format *out)
{
    static const char *const names[] = {
        [CA_EXPORT_PEM] = "pem", [CA_EXPORT_DER] = "der", [CA_EXPORT_P12] = "p12"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum ca_export_format)i;
            return 0;
        }
    }
    return -1;
}

/* Applies one parsed option to o. Returns 0 or CA_CLI_USAGE_ERROR after saying why. */
static int ca_cli_opt_apply(struct ca_cli_opts *o, int opt, const char *arg, const char *cmd)
{
    switch (opt) {
    case CA_OPT_DIR:
        o->dir = arg;
        return 0;
    case CA_OPT_NAME:
        o->name = arg;
        return 0;
    case CA_OPT_OUT:
        o->out = arg;
        return 0;
    case CA_OPT_FORCE:
        o->force = true;
        return 0;
    case 'h':
        o->help = true;
        return 0;
    case CA_OPT_KEY:
        if (ca_key_type_parse(arg, &o->key) == 0)
            return 0;
        fprintf(stderr, "sluice: ca %s: unknown --key '%s'; use ec-p256, rsa-2048 or rsa-3072\n",
                cmd, arg);
        return CA_CLI_USAGE_ERROR;
    case CA_OPT_FORMAT:
        o->has_format = true;
        if (ca_cli_format_parse(arg, &o->format) == 0)
            return 0;
        fprintf(stderr, "sluice: ca %s: unknown --format '%s'; use pem, der or p12\n", cmd, arg);
        return CA_CLI_USAGE_ERROR;
    }
    return CA_CLI_USAGE_ERROR;
}

/* getopt_long error: unknown option or missing argument. */
static int ca_cli_opt_error(int opt, char **argv, const char *cmd)
{
    const char *what = argv[optind - 1];

    if (opt == ':')
        fprintf(stderr, "sluice: ca %s: option %s needs a value; see: sluice ca %s --help\n", cmd,
                what, cmd);
    else
        fprintf(stderr, "sluice: ca %s: unknown option %s; see: sluice ca %s --help\n", cmd, what,
                cmd);
    return CA_CLI_USAGE_ERROR;
}

/* Parses argv (argv[0] is the subcommand name). Returns 0 or CA_CLI_USAGE_ERROR. */
static int ca_cli_parse(int argc, char **argv, const struct option *longopts, struct ca_cli_opts *o)
{
    const char *cmd = argv[0];
    int opt, rc;

    /* optind = 0 makes glibc's getopt start over even if main already used it. '+' stops
     * at the first operand instead of permuting, ':' reports a missing value as ':'. */
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
        if (opt == '?' || opt == ':')
            return ca_cli_opt_error(opt, argv, cmd);
        if ((rc = ca_cli_opt_apply(o, opt, optarg, cmd)) != 0)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "sluice: ca %s: unexpected argument '%s'; see: sluice ca %s --help\n", cmd,
                argv[optind], cmd);
        return CA_CLI_USAGE_ERROR;
    }
    return 0;
}

/* Writes the certificate's SHA-256 fingerprint as "AB:CD:..." into out (>= 96 bytes). */
static void ca_cli_fingerprint(const X509 *cert, char *out, size_t outlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    size_t pos = 0;

    out[0] = '\0';
    if (!X509_digest(cert, EVP_sha256(), md, &len))
        return;
    for (unsigned int i = 0; i < len && pos + 4 <= outlen; i++)
        pos += (size_t)snprintf(out + pos, outlen - pos, i ? ":%02X" : "%02X", md[i]);
}

static int ca_cli_init(const struct ca_cli_opts *o)
{
    char err[PATH_MAX * 2 + 256];
    char fp[EVP_MAX_MD_SIZE * 3 + 1];
    bool replaced = o->force && ca_exists(o->dir);
    struct ca *ca;

    if (ca_init(o->dir, o->key, o->name, o->force, err, sizeof(err)) < 0 ||
        (ca = ca_load_cert(o->dir, err, sizeof(err))) == NULL) {
        fprintf(stderr, "sluice: %s\n", err);
        return CA_CLI_RUNTIME_ERROR;
    }
    ca_cli_fingerprint(ca->cert, fp, sizeof(fp));
    printf("%s %s CA in %s\n"
           "  certificate: %s/ca.pem\n"
           "  private key: %s/ca.key (mode 0600)\n"
           "  SHA-256 fingerprint: %s\n"
           "Install the certificate on clients: sluice ca export --ca-dir %s --format pem|der|p12 "
           "--out FILE\n",
           replaced ? "Replaced the" : "Created a new", ca_key_type_name(o->key), o->dir, o->dir,
           o->dir, fp, o->dir);
    if (replaced)
        printf("Clients that trusted the previous CA must install the new certificate.\n");
    ca_free(ca);
    return 0;
}

static int ca_cli_export(const struct ca_cli_opts *o)
{
    char err[PATH_MAX * 2 + 256];
    bool to_stdout = o->out == NULL || strcmp(o->out, "-") == 0;
    struct ca *ca;
    int rc = CA_CLI_RUNTIME_ERROR;

    if (!o->has_format) {
        fprintf(stderr, "sluice: ca export: --format is required: pem, der or p12\n");
        return CA_CLI_USAGE_ERROR;
    }
    if (to_stdout && o->format != CA_EXPORT_PEM && isatty(STDOUT_FILENO)) {
        fprintf(stderr, "sluice: ca export: not writing binary %s to a terminal; add --out FILE\n",
                o->format == CA_EXPORT_DER ? "DER" : "PKCS#12");
        return CA_CLI_USAGE_ERROR;
    }
    /* Only the certificate: export works for users who cannot read the key. */
    if ((ca = ca_load_cert(o->dir, err, sizeof(err))) == NULL ||
        ca_export(ca, o->format, o->out, err, sizeof(err)) < 0)
        fprintf(stderr, "sluice: %s\n", err);
    else
        rc = 0;
    ca_free(ca);
    return rc;
}

int ca_cli_main(int argc, char **argv)
{
    struct ca_cli_opts o = {.dir = NULL, .key = CA_KEY_EC_P256};
    bool init = argc >= 2 && strcmp(argv[1], "init") == 0;
    int rc;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        ca_cli_usage(stdout);
        return 0;
    }
    if (argc < 2 || (!init && strcmp(argv[1], "export") != 0)) {
        fprintf(stderr, "sluice: ca: %s%s; use init or export (see: sluice ca --help)\n",
                argc < 2 ? "missing command" : "unknown command ", argc < 2 ? "" : argv[1]);
        return CA_CLI_USAGE_ERROR;
    }
    rc = ca_cli_parse(argc - 1, argv + 1, init ? ca_cli_init_options : ca_cli_export_options, &o);
    if (rc != 0)
        return rc;
    if (o.help) {
        (init ? ca_cli_usage_init : ca_cli_usage_export)(stdout);
        return 0;
    }
    if (o.dir == NULL)
        o.dir = ca_default_dir();
    return init ? ca_cli_init(&o) : ca_cli_export(&o);
}
