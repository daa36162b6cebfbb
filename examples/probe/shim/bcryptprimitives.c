/*
 * bcryptprimitives.dll for Wine 8 only: exports ProcessPrng, which Rust's
 * std imports (for HashMap keys and the like) and which Wine 8's own
 * bcryptprimitives.dll lacks, so that an exe built for
 * x86_64-pc-windows-gnu fails to load there (exit status 53, silent under
 * WINEDEBUG=-all).
 *
 * scripts/build-probe.sh builds it and places it beside wsk-probe.exe;
 * the loader looks in the exe's directory first. Do not ship it for
 * Windows: Windows 10 and later have the real DLL in System32.
 *
 *   x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *       bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>
#include <ntsecapi.h> /* SystemFunction036, also known as RtlGenRandom */

/* Fills data with len random bytes; TRUE (the real one always succeeds). */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
