/*
 * fuzz_replay.c — main() for fuzz targets in builds without libFuzzer:
 * runs LLVMFuzzerTestOneInput once over every file named (or every file in
 * every directory named), so checked-in crash inputs are regression tests.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) { fclose(f); free(buf); return -1; }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, errors = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) { perror(argv[i]); errors++; continue; }
        if (!S_ISDIR(st.st_mode)) { errors += replay_file(argv[i]) != 0; files++; continue; }
        DIR *dir = opendir(argv[i]);
        struct dirent *de;
        while (dir && (de = readdir(dir))) {
            if (de->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
            errors += replay_file(path) != 0;
            files++;
        }
        if (dir) closedir(dir);
    }
    printf("replayed %d inputs, %d unreadable\n", files, errors);
    return errors ? 1 : 0;
}
