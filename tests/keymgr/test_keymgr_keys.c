/*
 * Key wrapping (RFC 5649 vectors, GCM with AAD, tampering), the key file
 * (permissions, parse errors with file:line, rotation) and the key-file
 * provider (wrong key, altered wrapped DEK), and the locked-memory key cache.
 */
#include "keymgr.h"
#include "sr_test.h"

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void hex(const char *h, uint8_t *out, size_t len) { SR_CHECK_OK(sr_hex_decode(h, out, len)); }

/* RFC 5649 section 6: 192-bit KEK, a 20-byte and a 7-byte key. */
static void test_kwp_rfc5649_vectors(void)
{
    uint8_t kek[24], key20[20], want20[32], key7[7], want7[16], out[64], back[64];
    hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", kek, 24);
    hex("c37b7e6492584340bed12207808941155068f738", key20, 20);
    hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a", want20, 32);
    hex("466f7250617369", key7, 7);
    hex("afbeb0f07dfbf5419200f2ccb50bb24f", want7, 16);
    size_t n = 0;
    SR_CHECK_OK(sr_keymgr_kwp_wrap(kek, 24, key20, 20, out, sizeof out, &n));
    SR_CHECK(n == 32 && memcmp(out, want20, 32) == 0);
    SR_CHECK_OK(sr_keymgr_kwp_unwrap(kek, 24, want20, 32, back, sizeof back, &n));
    SR_CHECK(n == 20 && memcmp(back, key20, 20) == 0);
    SR_CHECK_OK(sr_keymgr_kwp_wrap(kek, 24, key7, 7, out, sizeof out, &n));
    SR_CHECK(n == 16 && memcmp(out, want7, 16) == 0);
    SR_CHECK_OK(sr_keymgr_kwp_unwrap(kek, 24, want7, 16, back, sizeof back, &n));
    SR_CHECK(n == 7 && memcmp(back, key7, 7) == 0);
    want20[5] ^= 1;
    SR_CHECK_ERR(sr_keymgr_kwp_unwrap(kek, 24, want20, 32, back, sizeof back, &n), SR_ERR_WRAP_INTEGRITY);
    SR_CHECK_ERR(sr_keymgr_kwp_unwrap(kek, 24, want7, 12, back, sizeof back, &n), SR_ERR_WRAP_INTEGRITY);
}

static void test_wrap_gcm_binds_aad_and_detects_tampering(void)
{
    uint8_t kek[32], key[32], back[32];
    SR_CHECK_OK(sr_random_bytes(kek, 32));
    SR_CHECK_OK(sr_random_bytes(key, 32));
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_wrapped_key_t wk;
    SR_CHECK_OK(sr_keymgr_wrap(SR_WRAP_AES_256_GCM, kek, 32, &id, 7, (const uint8_t *)"aad", 3, key, 32, &wk));
    SR_CHECK(wk.blob_len == 12 + 32 + 16 && wk.kek_version == 7 && sr_uuid_equal(&wk.kek_id, &id));
    size_t n = 0;
    SR_CHECK_OK(sr_keymgr_unwrap(kek, 32, &wk, (const uint8_t *)"aad", 3, back, sizeof back, &n));
    SR_CHECK(n == 32 && memcmp(back, key, 32) == 0);
    SR_CHECK_ERR(sr_keymgr_unwrap(kek, 32, &wk, (const uint8_t *)"aaD", 3, back, sizeof back, &n),
                 SR_ERR_WRAP_INTEGRITY);
    for (uint32_t i = 0; i < wk.blob_len; i++) {
        sr_wrapped_key_t bad = wk;
        bad.blob[i] ^= 0x80;
        SR_CHECK_ERR(sr_keymgr_unwrap(kek, 32, &bad, (const uint8_t *)"aad", 3, back, sizeof back, &n),
                     SR_ERR_WRAP_INTEGRITY);
    }
    /* KWP refuses AAD rather than silently dropping it */
    SR_CHECK_ERR(sr_keymgr_wrap(SR_WRAP_AES_256_KWP, kek, 32, &id, 1, (const uint8_t *)"a", 1, key, 32, &wk),
                 SR_ERR_INVALID_ARG);
    SR_CHECK_OK(sr_keymgr_wrap(SR_WRAP_AES_256_KWP, kek, 32, &id, 1, NULL, 0, key, 32, &wk));
    SR_CHECK(wk.blob_len == 40);
    SR_CHECK_OK(sr_keymgr_unwrap(kek, 32, &wk, NULL, 0, back, sizeof back, &n));
    SR_CHECK(n == 32 && memcmp(back, key, 32) == 0);
}

static void test_wrapped_key_encoding(void)
{
    uint8_t kek[32] = {1}, key[32] = {2}, enc[SR_WRAPPED_KEY_ENCODED_MAX];
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_wrapped_key_t wk, back;
    SR_CHECK_OK(sr_keymgr_wrap(SR_WRAP_AES_256_GCM, kek, 32, &id, 3, NULL, 0, key, 32, &wk));
    size_t n = 0;
    SR_CHECK_OK(sr_wrapped_key_encode(&wk, enc, sizeof enc, &n));
    SR_CHECK_OK(sr_wrapped_key_decode(enc, n, &back));
    SR_CHECK(back.alg == wk.alg && back.kek_version == 3 && back.blob_len == wk.blob_len &&
             memcmp(back.blob, wk.blob, wk.blob_len) == 0 && sr_uuid_equal(&back.kek_id, &id));
    for (size_t cut = 0; cut < n; cut++) SR_CHECK(sr_wrapped_key_decode(enc, cut, &back) != SR_OK);
    enc[4] = 9;
    SR_CHECK_ERR(sr_wrapped_key_decode(enc, n, &back), SR_ERR_VERSION);
}

static void test_keyfile_provider(void)
{
    const char *path = sr_test_path("master.key"), *other = sr_test_path("other.key");
    SR_CHECK_OK(sr_keyfile_create(path));
    SR_CHECK_ERR(sr_keyfile_create(path), SR_ERR_EXISTS);
    SR_CHECK_OK(sr_keyfile_create(other));
    struct stat st;
    SR_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    sr_keyprov_t *kp = NULL, *wrong = NULL;
    SR_CHECK_OK(sr_keyprov_keyfile_open(path, &kp));
    SR_CHECK_OK(sr_keyprov_keyfile_open(other, &wrong));
    SR_CHECK(strstr(sr_keyprov_description(kp), "keyfile:") == sr_keyprov_description(kp));
    sr_uuid_t ts, ts2;
    sr_uuid_generate(&ts);
    sr_uuid_generate(&ts2);
    uint8_t dek[32], back[32];
    sr_wrapped_key_t wk, rewrapped;
    SR_CHECK_OK(sr_keyprov_dek_create(kp, &ts, 1, dek, &wk));
    SR_CHECK_OK(sr_keyprov_dek_unwrap(kp, &ts, 1, &wk, back));
    SR_CHECK(memcmp(dek, back, 32) == 0);
    SR_CHECK_ERR(sr_keyprov_dek_unwrap(wrong, &ts, 1, &wk, back), SR_ERR_WRONG_KEY);
    SR_CHECK(strstr(sr_err_detail(), "wrapped by master key") != NULL);
    SR_CHECK_ERR(sr_keyprov_dek_unwrap(kp, &ts2, 1, &wk, back), SR_ERR_WRAP_INTEGRITY); /* other tablespace */
    SR_CHECK_ERR(sr_keyprov_dek_unwrap(kp, &ts, 2, &wk, back), SR_ERR_WRAP_INTEGRITY);  /* other version */

    /* rotation: old blobs still unwrap, rewrap moves them to the new version */
    uint32_t v = 0;
    SR_CHECK_OK(sr_keyfile_rotate(path, &v));
    SR_CHECK(v == 2);
    sr_keyprov_t *kp2 = NULL;
    SR_CHECK_OK(sr_keyprov_keyfile_open(path, &kp2));
    SR_CHECK_OK(sr_keyprov_dek_unwrap(kp2, &ts, 1, &wk, back));
    SR_CHECK_OK(sr_keyprov_dek_rewrap(kp2, &ts, 1, &wk, &rewrapped));
    SR_CHECK(rewrapped.kek_version == 2);
    SR_CHECK_OK(sr_keyprov_dek_unwrap(kp2, &ts, 1, &rewrapped, back));
    SR_CHECK(memcmp(dek, back, 32) == 0);
    SR_CHECK_ERR(sr_keyprov_dek_unwrap(kp, &ts, 1, &rewrapped, back), SR_ERR_WRONG_KEY); /* old file copy */
    sr_uuid_t id;
    SR_CHECK_OK(sr_keyfile_describe(path, &id, &v));
    SR_CHECK(v == 2 && sr_uuid_equal(&id, &wk.kek_id));
    sr_keyprov_free(kp), sr_keyprov_free(kp2), sr_keyprov_free(wrong);

    SR_CHECK(chmod(path, 0644) == 0);
    SR_CHECK_ERR(sr_keyprov_keyfile_open(path, &kp), SR_ERR_PERMISSION);
    SR_CHECK(strstr(sr_err_detail(), "chmod 600") != NULL);
    SR_CHECK_ERR(sr_keyprov_keyfile_open(sr_test_path("missing.key"), &kp), SR_ERR_NOT_FOUND);
}

static void test_keyfile_parse_errors_name_the_line(void)
{
    const char *path = sr_test_path("bad.key");
    const char *text = "strongroom-keyfile 1\nmk 6f1c56c4-3a43-4a4e-9c1f-0a2b3c4d5e6f 1 00ff\n";
    SR_CHECK(sr_test_write_file(path, text, strlen(text)) == 0);
    SR_CHECK(chmod(path, 0600) == 0);
    sr_keyprov_t *kp = NULL;
    SR_CHECK_ERR(sr_keyprov_keyfile_open(path, &kp), SR_ERR_PARSE);
    SR_CHECK(strstr(sr_err_detail(), "bad.key:2") != NULL);
    const char *not_keyfile = "hello\n";
    SR_CHECK(sr_test_write_file(path, not_keyfile, strlen(not_keyfile)) == 0);
    SR_CHECK_ERR(sr_keyprov_keyfile_open(path, &kp), SR_ERR_PARSE);
    SR_CHECK(strstr(sr_err_detail(), "not a strongroom key file") != NULL);
}

static void test_keycache(void)
{
    sr_keycache_t *kc = NULL;
    SR_CHECK_OK(sr_keycache_new(2, 60000, &kc));
    sr_uuid_t a, b, c;
    sr_uuid_generate(&a), sr_uuid_generate(&b), sr_uuid_generate(&c);
    uint8_t k1[32] = {1}, k2[32] = {2}, out[32];
    size_t n = 0;
    SR_CHECK_OK(sr_keycache_put(kc, &a, 1, k1, 32, 0));
    SR_CHECK_OK(sr_keycache_put(kc, &b, 1, k2, 32, 1));
    SR_CHECK_OK(sr_keycache_get(kc, &a, 1, out, sizeof out, &n));
    SR_CHECK(n == 32 && memcmp(out, k1, 32) == 0);
    SR_CHECK_ERR(sr_keycache_get(kc, &a, 2, out, sizeof out, &n), SR_ERR_NOT_FOUND);
    usleep(5000);
    SR_CHECK_ERR(sr_keycache_get(kc, &b, 1, out, sizeof out, &n), SR_ERR_KEY_EXPIRED);
    SR_CHECK_ERR(sr_keycache_get(kc, &b, 1, out, sizeof out, &n), SR_ERR_NOT_FOUND); /* wiped on expiry */
    SR_CHECK_OK(sr_keycache_put(kc, &b, 1, k2, 32, 0));
    SR_CHECK_OK(sr_keycache_put(kc, &c, 1, k2, 32, 0)); /* full: evicts the soonest to expire */
    sr_keycache_purge(kc, &a);
    SR_CHECK_ERR(sr_keycache_get(kc, &a, 1, out, sizeof out, &n), SR_ERR_NOT_FOUND);
    sr_keycache_purge(kc, NULL);
    SR_CHECK_ERR(sr_keycache_get(kc, &c, 1, out, sizeof out, &n), SR_ERR_NOT_FOUND);
    sr_keycache_free(kc);
}

/* A process of another user on the agent's socket path (the agent down, its
 * directory writable) is not taken for the agent: it would hand out a data
 * key it chose for every new tablespace. Run as root (the impostor runs as
 * nobody). */
static void test_agent_impostor_refused(void)
{
    if (geteuid() != 0) {
        printf("  skipped: needs root (the impostor runs as another user)\n");
        return;
    }
    static const uint8_t answer[4 + 1 + 32] = {0, 0, 0, 33, 'K'}; /* the same "data key" for everyone */
    char path[700];
    pid_t impostor = sr_test_impostor_server("agent.sock", answer, sizeof answer, path, sizeof path);
    SR_CHECK(impostor > 0);
    sr_keyprov_t *kp = NULL;
    SR_CHECK_OK(sr_keyprov_agent_open(path, &kp));
    sr_uuid_t ts;
    sr_uuid_generate(&ts);
    uint8_t *dek = sr_secure_alloc(SR_KEYMGR_KEY_BYTES);
    sr_wrapped_key_t wk;
    SR_CHECK_ERR(sr_keyprov_dek_create(kp, &ts, 1, dek, &wk), SR_ERR_PERMISSION);
    SR_CHECK_CONTAINS(sr_err_detail(), "not the key agent");
    sr_secure_free(dek);
    sr_keyprov_free(kp);
    kill(impostor, SIGKILL);
    waitpid(impostor, NULL, 0);
}

int main(void)
{
    SR_RUN(test_kwp_rfc5649_vectors);
    SR_RUN(test_wrap_gcm_binds_aad_and_detects_tampering);
    SR_RUN(test_wrapped_key_encoding);
    SR_RUN(test_keyfile_provider);
    SR_RUN(test_keyfile_parse_errors_name_the_line);
    SR_RUN(test_keycache);
    SR_RUN(test_agent_impostor_refused);
    return sr_test_finish();
}
