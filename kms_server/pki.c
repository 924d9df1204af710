/*
 * pki.c — kmsctl's private CA: a CA certificate, then server and client
 * certificates it signs (ECDSA P-256, SHA-256), so a newcomer needs no
 * openssl commands. Private keys are written mode 0600, never overwritten.
 */
#include "kms.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static sr_err_t pem_write(const char *path, int mode, int is_key, void *obj)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return sr_err_set_errno(sr_err_from_errno(errno), errno, "cannot create %s", path);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return sr_err_set_errno(SR_ERR_IO, errno, "cannot open %s", path);
    }
    int ok = is_key ? PEM_write_PrivateKey(f, obj, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, obj);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_IO, "cannot write %s", path);
}

static sr_err_t add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_CRYPTO, "certificate extension %s", value);
}

static sr_err_t set_name(X509_NAME *name, const char *cn)
{
    int ok = X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"strongroom", -1, -1, 0) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    return ok ? SR_OK : sr_err_set_openssl(SR_ERR_INVALID_ARG, "certificate subject CN=%s", cn);
}

/* The request's SubjectPublicKeyInfo into the certificate as it is (the
 * request's key was decoded to verify it; X509_set_pubkey would encode it
 * and decode it again through OpenSSL 3.0's decoders: 0.2-0.5 ms per
 * enrolment). Parameters: a named curve, NULL or none. */
static int copy_key_info(X509 *x, X509_PUBKEY *from)
{
    ASN1_OBJECT *alg_oid = NULL;
    const unsigned char *bits = NULL;
    int len = 0, ptype = 0;
    X509_ALGOR *alg = NULL;
    const ASN1_OBJECT *aobj = NULL;
    const void *pval = NULL;
    if (!X509_PUBKEY_get0_param(&alg_oid, &bits, &len, &alg, from) || !alg) return 0;
    X509_ALGOR_get0(&aobj, &ptype, &pval, alg);
    if (ptype != V_ASN1_OBJECT && ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF) return 0;
    ASN1_OBJECT *key_oid = OBJ_dup(aobj), *param = ptype == V_ASN1_OBJECT ? OBJ_dup(pval) : NULL;
    unsigned char *copy = OPENSSL_memdup(bits, (size_t)len);
    if (key_oid && (ptype != V_ASN1_OBJECT || param) && copy &&
        X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), key_oid, ptype, param, copy, len))
        return 1;
    ASN1_OBJECT_free(key_oid), ASN1_OBJECT_free(param), OPENSSL_free(copy);
    return 0;
}

/* A new certificate for `key` (or, given, a request's key info), signed by
 * (issuer, issuer_key), or self-signed. */
static sr_err_t make_cert(EVP_PKEY *key, X509_PUBKEY *key_info, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                          int days, const char *const *exts, const int *nids, X509 **out)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    sr_err_t rc = x && bn ? SR_OK : SR_ERR_NOMEM;
    if (rc == SR_OK && (!BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
                        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
                        !X509_gmtime_adj(X509_getm_notBefore(x), -300) ||
                        !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) ||
                        !(key_info ? copy_key_info(x, key_info) : X509_set_pubkey(x, key))))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot build a certificate for %s", cn);
    if (rc == SR_OK) rc = set_name(X509_get_subject_name(x), cn);
    if (rc == SR_OK && !X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x)))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "issuer name");
    for (int i = 0; rc == SR_OK && exts[i]; i++) rc = add_ext(x, issuer ? issuer : x, nids[i], exts[i]);
    if (rc == SR_OK && !X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()))
        rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot sign the certificate for %s", cn);
    BN_free(bn);
    if (rc != SR_OK) X509_free(x), x = NULL;
    *out = x;
    return rc;
}

static sr_err_t load_pem(const char *cert_path, const char *key_path, X509 **ca, EVP_PKEY **key)
{
    FILE *f = fopen(cert_path, "r");
    *ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!*ca) return sr_err_set(SR_ERR_CONFIG, "cannot read the CA certificate %s", cert_path);
    sr_err_t rc = sr_tls_private_key_load(key_path, "CA key", key);
    if (rc != SR_OK) X509_free(*ca), *ca = NULL;
    return rc;
}

static sr_err_t load_ca(const char *dir, X509 **ca, EVP_PKEY **ca_key)
{
    char cert[4200], key[4200];
    snprintf(cert, sizeof cert, "%s/ca.pem", dir), snprintf(key, sizeof key, "%s/ca.key", dir);
    return load_pem(cert, key, ca, ca_key);
}

static void describe(X509 *x, kms_cert_info_t *info)
{
    unsigned char md[32];
    unsigned len = 0;
    info->fingerprint[0] = '\0';
    if (X509_digest(x, EVP_sha256(), md, &len) == 1 && len == sizeof md) sr_hex_encode(md, sizeof md, info->fingerprint);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(info->serial, sizeof info->serial, "%s", hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
    struct tm tm;
    info->not_after = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

sr_err_t kms_pki_make_ca(const char *dir, int days)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key) return sr_err_set_openssl(SR_ERR_CRYPTO, "cannot generate the CA key");
    static const char *const exts[] = {"critical,CA:TRUE", "critical,keyCertSign,cRLSign", "hash", NULL};
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_subject_key_identifier};
    X509 *ca = NULL;
    char path[4200];
    sr_err_t rc = make_cert(key, NULL, "strongroom KMS CA", NULL, NULL, days, exts, nids, &ca);
    snprintf(path, sizeof path, "%s/ca.key", dir);
    if (rc == SR_OK) rc = pem_write(path, 0600, 1, key);
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    if (rc == SR_OK) rc = pem_write(path, 0644, 0, ca);
    X509_free(ca);
    EVP_PKEY_free(key);
    return rc;
}

sr_err_t kms_pki_issue(const char *dir, const char *file_prefix, const char *cn, int server, const char *dns_name,
                       int days, kms_cert_info_t *info)
{
    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    sr_err_t rc = load_ca(dir, &ca, &ca_key);
    if (rc != SR_OK) return rc;
    char san[600];
    snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", dns_name ? dns_name : "localhost");
    const char *exts[] = {"critical,CA:FALSE", "critical,digitalSignature,keyEncipherment",
                          server ? "serverAuth" : "clientAuth", "keyid,issuer", server ? san : NULL, NULL};
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage, NID_authority_key_identifier,
                               NID_subject_alt_name};
    key = EVP_EC_gen("P-256");
    if (!key) rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot generate a key for %s", cn);
    if (rc == SR_OK) rc = make_cert(key, NULL, cn, ca, ca_key, days, exts, nids, &x);
    char path[4200];
    snprintf(path, sizeof path, "%s.key", file_prefix);
    if (rc == SR_OK) rc = pem_write(path, 0600, 1, key);
    snprintf(path, sizeof path, "%s.pem", file_prefix);
    if (rc == SR_OK) rc = pem_write(path, 0644, 0, x);
    if (rc == SR_OK && info) describe(x, info);
    X509_free(x), X509_free(ca);
    EVP_PKEY_free(key), EVP_PKEY_free(ca_key);
    return rc;
}

struct kms_pki_ca {
    X509 *cert;
    EVP_PKEY *key;
};

sr_err_t kms_pki_ca_load(const char *cert_path, const char *key_path, kms_pki_ca_t **out)
{
    kms_pki_ca_t *ca = calloc(1, sizeof *ca);
    if (!ca) return sr_err_set(SR_ERR_NOMEM, "cannot allocate the CA");
    sr_err_t rc = load_pem(cert_path, key_path, &ca->cert, &ca->key);
    if (rc != SR_OK) free(ca), ca = NULL;
    *out = ca;
    return rc;
}

void kms_pki_ca_free(kms_pki_ca_t *ca)
{
    if (!ca) return;
    X509_free(ca->cert), EVP_PKEY_free(ca->key);
    free(ca);
}

sr_err_t kms_pki_sign_csr(const kms_pki_ca_t *ca, const uint8_t *csr, size_t csr_len, const char *cn, int days,
                          uint8_t **cert, size_t *cert_len, kms_cert_info_t *info)
{
    const unsigned char *p = csr;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)csr_len);
    if (!req || p != csr + csr_len) {
        X509_REQ_free(req);
        return sr_err_set(SR_ERR_PARSE, "the certificate request is not DER");
    }
    EVP_PKEY *pub = X509_REQ_get_pubkey(req);
    sr_err_t rc = pub && X509_REQ_verify(req, pub) == 1 ? SR_OK
                                                          : sr_err_set(SR_ERR_AUTH, "the certificate request's signature "
                                                                                    "does not verify");
    X509 *x = NULL;
    static const char *const exts[] = {"critical,CA:FALSE", "critical,digitalSignature,keyEncipherment", "clientAuth",
                                       "keyid,issuer", NULL};
    static const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage, NID_authority_key_identifier};
    if (rc == SR_OK) rc = make_cert(pub, X509_REQ_get_X509_PUBKEY(req), cn, ca->cert, ca->key, days, exts, nids, &x);
    unsigned char *der = NULL;
    int len = rc == SR_OK ? i2d_X509(x, &der) : -1;
    if (rc == SR_OK && len <= 0) rc = sr_err_set_openssl(SR_ERR_CRYPTO, "cannot encode the certificate");
    if (rc == SR_OK) {
        if (info) describe(x, info);
        *cert = malloc((size_t)len);
        if (*cert) memcpy(*cert, der, (size_t)len), *cert_len = (size_t)len;
        else rc = SR_ERR_NOMEM;
    }
    OPENSSL_free(der);
    X509_free(x), X509_REQ_free(req);
    EVP_PKEY_free(pub);
    return rc;
}
