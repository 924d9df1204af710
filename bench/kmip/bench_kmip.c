/*
 * bench_kmip — TTLV encode + decode of a typical Get response (a 256-bit
 * symmetric key), in ops/s; and our client's round-trip rate (Get) against
 * the PyKMIP server on loopback, over mutual TLS on one kept connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kmip.h"
#include "pykmip_server.h"

static void encode_get_response(sr_kmip_enc_t *e)
{
    static const uint8_t key[32] = {1};
    sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_MESSAGE);
    sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_HEADER);
    sr_kmip_begin(e, SR_KMIP_TAG_PROTOCOL_VERSION);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    sr_kmip_put_int(e, SR_KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
    sr_kmip_end(e);
    sr_kmip_put_datetime(e, SR_KMIP_TAG_TIME_STAMP, 1700000000);
    sr_kmip_put_int(e, SR_KMIP_TAG_BATCH_COUNT, 1);
    sr_kmip_end(e);
    sr_kmip_begin(e, SR_KMIP_TAG_BATCH_ITEM);
    sr_kmip_put_enum(e, SR_KMIP_TAG_OPERATION, SR_KMIP_OP_GET);
    sr_kmip_put_enum(e, SR_KMIP_TAG_RESULT_STATUS, SR_KMIP_STATUS_SUCCESS);
    sr_kmip_begin(e, SR_KMIP_TAG_RESPONSE_PAYLOAD);
    sr_kmip_put_enum(e, SR_KMIP_TAG_OBJECT_TYPE, SR_KMIP_OBJECT_SYMMETRIC_KEY);
    sr_kmip_put_text(e, SR_KMIP_TAG_UNIQUE_IDENTIFIER, "6f1c56c4-3a43-4a4e-9c1f-0a2b3c4d5e6f");
    sr_kmip_begin(e, SR_KMIP_TAG_SYMMETRIC_KEY);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_BLOCK);
    sr_kmip_put_enum(e, SR_KMIP_TAG_KEY_FORMAT_TYPE, SR_KMIP_KEY_FORMAT_RAW);
    sr_kmip_begin(e, SR_KMIP_TAG_KEY_VALUE);
    sr_kmip_put_bytes(e, SR_KMIP_TAG_KEY_MATERIAL, key, sizeof key);
    sr_kmip_end(e);
    sr_kmip_put_enum(e, SR_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, SR_KMIP_ALG_AES);
    sr_kmip_put_int(e, SR_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    sr_kmip_end(e);
    sr_kmip_end(e);
    sr_kmip_end(e);
    sr_kmip_end(e);
    sr_kmip_end(e);
}

static double codec_rate(double seconds)
{
    uint64_t t0 = sr_time_mono_ns(), n = 0;
    sr_kmip_enc_t e;
    sr_kmip_enc_init(&e);
    while ((double)(sr_time_mono_ns() - t0) / 1e9 < seconds) {
        for (int i = 0; i < 1000; i++) {
            e.len = 0;
            encode_get_response(&e);
            sr_kmip_response_t r;
            if (sr_kmip_enc_finish(&e) != SR_OK || sr_kmip_response_parse(e.buf, e.len, SR_KMIP_OP_GET, &r) != SR_OK) {
                fprintf(stderr, "codec: %s\n", sr_err_detail());
                exit(1);
            }
            sr_kmip_response_free(&r);
        }
        n += 1000;
    }
    sr_kmip_enc_free(&e);
    return (double)n / ((double)(sr_time_mono_ns() - t0) / 1e9);
}

int main(void)
{
    int quick = getenv("SR_BENCH_QUICK") != NULL;
    double codec = codec_rate(quick ? 0.3 : 2.0);
    printf("KMIP (one run)\n\n| measure | value |\n|---|---|\n");
    printf("| TTLV encode + decode + parse of a Get response (256-bit key) | %.0f ops/s |\n", codec);
    char dir[] = "/tmp/bench_kmip.XXXXXX", make_pki[4096];
    uint16_t port = 0;
    if (!mkdtemp(dir)) return 1;
    snprintf(make_pki, sizeof make_pki, "%s/tests/pki/make-test-pki", SR_PROJECT_SOURCE_DIR);
    if (pykmip_start(dir, make_pki, &port) != 0) {
        printf("| Get round trips against the PyKMIP server | not measured (server did not start) |\n");
        return 0;
    }
    char ca[200], crt[200], key[200];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(crt, sizeof crt, "%s/client.pem", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    sr_kmip_client_options_t o = {.host = "127.0.0.1", .port = port, .verify_name = "localhost", .ca_file = ca,
                                  .cert_file = crt, .key_file = key};
    sr_kmip_client_t *c = NULL;
    char uid[SR_KMIP_UID_MAX];
    uint8_t k[64];
    size_t len = 0;
    if (sr_kmip_client_new(&o, &c) != SR_OK ||
        sr_kmip_create_aes_key(c, &(sr_kmip_key_template_t){.name = "bench", .usage_mask = SR_KMIP_USAGE_ENCRYPT}, uid) != SR_OK) {
        fprintf(stderr, "client: %s\n", sr_err_detail());
        pykmip_stop();
        return 1;
    }
    uint64_t t0 = sr_time_mono_ns(), n = 0;
    double seconds = quick ? 1.0 : 5.0;
    while ((double)(sr_time_mono_ns() - t0) / 1e9 < seconds) {
        if (sr_kmip_get_key(c, uid, k, sizeof k, &len) != SR_OK) {
            fprintf(stderr, "get: %s\n", sr_err_detail());
            break;
        }
        n++;
    }
    double rate = (double)n / ((double)(sr_time_mono_ns() - t0) / 1e9);
    printf("| Get round trips against the PyKMIP server (TLS 1.2, one connection) | %.0f ops/s (%.2f ms each) |\n", rate,
           1000.0 / rate);
    sr_kmip_client_free(c);
    pykmip_stop();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
