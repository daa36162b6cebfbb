#Requires -Version 5.1
#Requires -RunAsAdministrator
<#
.SYNOPSIS
Tests the wsk KMDF sample driver on a Windows 10/11 test VM under Driver
Verifier: build, install with devcon, drive it with wsk-probe, remove it,
and check what Driver Verifier counted.

.DESCRIPTION
Run it from an elevated PowerShell on a test VM (never on a machine you
care about: Driver Verifier can bugcheck it) that has Rust, cargo-make,
LLVM (libclang, for wdk-sys's bindgen) and the WDK (or an eWDK prompt).
Steps:

  1. test signing: if it is not on in this boot, `bcdedit /set testsigning on`;
  2. Driver Verifier: if wsk_sample_kmdf.sys is not configured with the
     flags below, `verifier /flags <flags> /driver wsk_sample_kmdf.sys`;
     after either of these it says that a reboot is needed and stops
     (exit 3): reboot and run it again;
  3. `cargo make` in examples\sample-kmdf-driver (the driver package:
     .sys, .inf, .cat, test certificate), and the certificate into the
     machine's Root and TrustedPublisher stores;
  4. `devcon install <inf> root\WskSampleKmdf`; the driver must be running
     and verified;
  5. builds examples\probe and runs `wsk-probe --mode all --concurrency N`,
     then again with `--cancel-after-ms M` (the probe starts its own
     loopback echo server);
  6. `devcon remove root\WskSampleKmdf`; the driver must unload;
  7. `verifier /query`: fails on a violation it reports, on pool still
     allocated by the driver (a leak), or on loads != unloads;
  8. a summary.

Driver Verifier flags: the standard set (`verifier /standard`: special
pool 0x1, force IRQL checking 0x2, pool tracking 0x8, I/O verification
0x10, deadlock detection 0x20, DMA checking 0x80, security checks 0x100,
miscellaneous checks 0x800, DDI compliance checking 0x20000 = 0x209BB)
plus randomized low resources simulation (0x4): 0x209BF. Under low
resources simulation some requests fail for lack of memory on purpose
(after the first minutes after boot, by default); such failures are
counted and tolerated, any other failure is not.

Exit status: 0 when every step passed, 1 on a failure (the message says
which), 3 when a reboot is needed first.

.PARAMETER RepoRoot
The repository's root (default: the parent of this script's folder).

.PARAMETER BuildProfile
debug (the default, `cargo make`) or release (`cargo make default --release`).

.PARAMETER PackageDirectory
Where `cargo make` put the driver package (default:
examples\sample-kmdf-driver\target\<profile>\wsk_sample_kmdf_package).

.PARAMETER Devcon
devcon.exe (default: on PATH, else the newest x64 one under the WDK's
Windows Kits\10\Tools, else under the eWDK's WDKContentRoot).

.PARAMETER Concurrency
Requests issued at once per mode (default 8).

.PARAMETER CancelAfterMs
The second run cancels each request this long after issuing it (default 20).

.PARAMETER TimeoutMs
The driver's limit for each step of a request (default 5000).

.PARAMETER NoLowResources
Leave randomized low resources simulation out (flags 0x209BB).

.PARAMETER SkipBuild
Use the package already built.

.PARAMETER KeepDriverPackage
Leave the driver package in the driver store after removing the device.

.PARAMETER LogDirectory
Where the probe's and verifier's output is saved (default: target\vm-test).

.EXAMPLE
powershell -ExecutionPolicy Bypass -File scripts\vm-test.ps1

.EXAMPLE
.\scripts\vm-test.ps1 -BuildProfile release -Concurrency 32 -CancelAfterMs 5
#>
[CmdletBinding()]
param(
    [string] $RepoRoot = (Split-Path -Parent $PSScriptRoot),
    [ValidateSet('debug', 'release')]
    [string] $BuildProfile = 'debug',
    [string] $PackageDirectory = '',
    [string] $Devcon = '',
    [ValidateRange(1, 1024)]
    [int] $Concurrency = 8,
    [ValidateRange(0, 600000)]
    [int] $CancelAfterMs = 20,
    [ValidateRange(1, 600000)]
    [int] $TimeoutMs = 5000,
    [switch] $NoLowResources,
    [switch] $SkipBuild,
    [switch] $KeepDriverPackage,
    [string] $LogDirectory = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$DriverName = 'wsk_sample_kmdf'
$DriverFile = "$DriverName.sys"
$HardwareId = 'root\WskSampleKmdf'
$ServiceName = 'WskSampleKmdf'
$Modes = @('socket-connect', 'connect', 'connect-ex')
$StandardFlags = 0x209BB
$LowResourcesFlag = 0x4
$VerifierFlags = $StandardFlags
if (-not $NoLowResources) { $VerifierFlags = $StandardFlags -bor $LowResourcesFlag }
$VerifierFlagsText = '0x{0:X}' -f $VerifierFlags
# What a failure injected by low resources simulation looks like in a
# probe line: the driver's result line or the Win32 error of the request.
$InjectedFailure = 'INSUFFICIENT_RESOURCES|NO_MEMORY|no memory|insufficient (system )?resources|Win32 error (8|14|1450)\b'

$Summary = New-Object System.Collections.Generic.List[object]

function Add-Result([string] $Step, [string] $Result, [string] $Detail) {
    $Summary.Add([pscustomobject]@{ Step = $Step; Result = $Result; Detail = $Detail })
}

function Write-Summary {
    Write-Host ''
    Write-Host 'vm-test: summary'
    $Summary | Format-Table -AutoSize -Wrap | Out-String -Width 200 | Write-Host
}

function Stop-Test([string] $Step, [string] $Message) {
    Add-Result $Step 'FAIL' $Message
    Write-Host "vm-test: FAIL: ${Step}: $Message" -ForegroundColor Red
    Write-Summary
    exit 1
}

function Stop-ForReboot([string[]] $Reasons) {
    foreach ($reason in $Reasons) {
        Add-Result 'reboot' 'NEEDED' $reason
    }
    Write-Host ''
    Write-Host 'vm-test: a reboot is needed before the driver can be tested:' -ForegroundColor Yellow
    foreach ($reason in $Reasons) { Write-Host "  - $reason" -ForegroundColor Yellow }
    Write-Host 'vm-test: reboot (Restart-Computer), then run this script again.' -ForegroundColor Yellow
    Write-Summary
    exit 3
}

# Runs a program, shows its output as it comes, and returns its exit code
# and output lines. Native programs' stderr must not become terminating
# errors (Windows PowerShell 5.1 turns redirected stderr into error records).
function Invoke-Tool {
    param(
        [Parameter(Mandatory = $true)] [string] $FilePath,
        [string[]] $ArgumentList = @(),
        [switch] $Quiet
    )
    Write-Host "> $FilePath $($ArgumentList -join ' ')"
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $lines = @(& $FilePath @ArgumentList 2>&1 | ForEach-Object {
                $line = "$_"
                if (-not $Quiet) { Write-Host "  $line" }
                $line
            })
        $code = $LASTEXITCODE
    }
    finally {
        $ErrorActionPreference = $saved
    }
    [pscustomobject]@{ ExitCode = $code; Output = $lines }
}

function Find-Devcon {
    if ($Devcon) {
        if (Test-Path -LiteralPath $Devcon -PathType Leaf) { return (Resolve-Path -LiteralPath $Devcon).Path }
        Stop-Test 'tools' "-Devcon $Devcon does not exist"
    }
    $onPath = Get-Command devcon.exe -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($onPath) { return $onPath.Path }
    $roots = @()
    foreach ($base in @(${env:ProgramFiles(x86)}, $env:ProgramFiles)) {
        if ($base) { $roots += (Join-Path $base 'Windows Kits\10\Tools') }
    }
    if ($env:WDKContentRoot) { $roots += (Join-Path $env:WDKContentRoot 'Tools') }
    foreach ($root in $roots) {
        if (-not (Test-Path -LiteralPath $root)) { continue }
        $found = Get-ChildItem -LiteralPath $root -Filter devcon.exe -Recurse -ErrorAction SilentlyContinue |
            Where-Object { $_.FullName -match '\\x64\\devcon\.exe$' } |
            Sort-Object FullName -Descending | Select-Object -First 1
        if ($found) { return $found.FullName }
    }
    Stop-Test 'tools' 'devcon.exe not found: pass -Devcon PATH (the WDK installs it under Windows Kits\10\Tools\<version>\x64)'
}

function Get-DriverState {
    $driver = Get-CimInstance -ClassName Win32_SystemDriver -Filter "Name='$ServiceName'" -ErrorAction SilentlyContinue
    if ($null -eq $driver) { return 'NotInstalled' }
    return [string]$driver.State
}

# Runs the probe once; returns a line for the summary. Fails the test on
# any request that neither succeeded, nor was cancelled as asked, nor (under
# low resources simulation) failed for lack of memory.
function Invoke-Probe([string] $Step, [string[]] $Arguments, [string] $LogFile) {
    $run = Invoke-Tool $ProbeExe $Arguments
    $run.Output | Set-Content -LiteralPath $LogFile -Encoding UTF8
    if ($run.ExitCode -eq 2) { Stop-Test $Step "wsk-probe rejected its arguments: $($Arguments -join ' ')" }
    $modePattern = '^(' + (($Modes | ForEach-Object { [regex]::Escape($_) }) -join '|') + '): '
    $lines = @($run.Output | Where-Object { $_ -match $modePattern })
    $ok = @($lines | Where-Object { $_ -match ($modePattern + 'ok ') })
    $cancelled = @($lines | Where-Object { $_ -match ($modePattern + 'cancelled$') })
    $failed = @($lines | Where-Object { $_ -notmatch ($modePattern + '(ok |cancelled$)') })
    $injected = @()
    if (-not $NoLowResources) { $injected = @($failed | Where-Object { $_ -match $InjectedFailure }) }
    $other = @($failed | Where-Object { $injected -notcontains $_ })
    $expected = $Modes.Count * $Concurrency
    $detail = "$($ok.Count) ok, $($cancelled.Count) cancelled, $($injected.Count) failed for lack of memory (injected), $($other.Count) failed; log: $LogFile"
    if ($lines.Count -ne $expected) {
        Stop-Test $Step "expected $expected result lines, got $($lines.Count) (exit $($run.ExitCode)); $detail"
    }
    if ($other.Count -gt 0) {
        Stop-Test $Step ("$detail. First failure: " + $other[0])
    }
    if ($run.ExitCode -ne 0 -and $injected.Count -eq 0) {
        Stop-Test $Step "wsk-probe exited $($run.ExitCode) with no failed line; $detail"
    }
    Add-Result $Step 'PASS' $detail
}

# --- 0. where things are, and the tools
$RepoRoot = (Resolve-Path -LiteralPath $RepoRoot).Path
$Sample = Join-Path $RepoRoot 'examples\sample-kmdf-driver'
$ProbeDir = Join-Path $RepoRoot 'examples\probe'
if (-not $LogDirectory) { $LogDirectory = Join-Path $RepoRoot 'target\vm-test' }
if (-not $PackageDirectory) { $PackageDirectory = Join-Path $Sample "target\$BuildProfile\${DriverName}_package" }
New-Item -ItemType Directory -Force -Path $LogDirectory | Out-Null
foreach ($path in @($Sample, $ProbeDir)) {
    if (-not (Test-Path -LiteralPath $path)) { Stop-Test 'repository' "$path is missing (-RepoRoot $RepoRoot)" }
}
$Bcdedit = Join-Path $env:SystemRoot 'System32\bcdedit.exe'
$Verifier = Join-Path $env:SystemRoot 'System32\verifier.exe'
foreach ($tool in @($Bcdedit, $Verifier)) {
    if (-not (Test-Path -LiteralPath $tool)) { Stop-Test 'tools' "$tool is missing" }
}
if (-not (Get-Command cargo -ErrorAction SilentlyContinue)) { Stop-Test 'tools' 'cargo is not on PATH (install Rust with rustup)' }
$DevconExe = Find-Devcon
$os = Get-CimInstance -ClassName Win32_OperatingSystem
Write-Host "vm-test: $($os.Caption) build $($os.BuildNumber); repository $RepoRoot; devcon $DevconExe"
Add-Result 'tools' 'PASS' "$($os.Caption) build $($os.BuildNumber); devcon $DevconExe"
if ([int]$os.BuildNumber -lt 19041) {
    Stop-Test 'tools' "Windows build $($os.BuildNumber): the sample needs Windows 10 2004 (19041) or later (KMDF 1.31, ExAllocatePool2)"
}

# --- 1, 2. test signing and Driver Verifier, then one reboot if either changed
$reboot = New-Object System.Collections.Generic.List[string]
$startOptions = [string](Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control' -Name SystemStartOptions).SystemStartOptions
if ($startOptions -match 'TESTSIGNING') {
    Add-Result 'test signing' 'PASS' 'on in this boot'
}
else {
    $run = Invoke-Tool $Bcdedit @('/set', 'testsigning', 'on')
    if ($run.ExitCode -ne 0) {
        Stop-Test 'test signing' "bcdedit /set testsigning on failed (exit $($run.ExitCode)); with Secure Boot on it cannot be set: turn Secure Boot off in the VM's firmware settings"
    }
    $reboot.Add('test signing was off: it is now on (bcdedit /set testsigning on)')
}

$memoryManagement = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management'
function Get-VerifierSettings {
    $properties = Get-ItemProperty -LiteralPath $memoryManagement
    $drivers = ''
    $level = [int64]0
    if ($properties.PSObject.Properties['VerifyDrivers']) { $drivers = [string]$properties.VerifyDrivers }
    if ($properties.PSObject.Properties['VerifyDriverLevel']) { $level = [int64]$properties.VerifyDriverLevel }
    $listed = @($drivers -split '\s+' | Where-Object { $_ -ieq $DriverFile }).Count -gt 0
    [pscustomobject]@{ Listed = $listed; Level = $level; Drivers = $drivers }
}
$marker = Join-Path $LogDirectory 'verifier-configured-boot.txt'
$boot = $os.LastBootUpTime.ToUniversalTime().ToString('o')
$settings = Get-VerifierSettings
if ($settings.Listed -and (($settings.Level -band $VerifierFlags) -eq $VerifierFlags)) {
    if ((Test-Path -LiteralPath $marker) -and ((Get-Content -LiteralPath $marker -Raw).Trim() -eq $boot)) {
        $reboot.Add("Driver Verifier was configured during this boot ($VerifierFlagsText for $DriverFile): it applies from the next boot")
    }
    else {
        Add-Result 'driver verifier' 'PASS' ("configured: flags 0x{0:X} for {1}" -f $settings.Level, $settings.Drivers)
    }
}
else {
    # Replaces the list of verified drivers with this one.
    $run = Invoke-Tool $Verifier @('/flags', $VerifierFlagsText, '/driver', $DriverFile)
    $settings = Get-VerifierSettings
    if (-not ($settings.Listed -and (($settings.Level -band $VerifierFlags) -eq $VerifierFlags))) {
        Stop-Test 'driver verifier' "verifier /flags $VerifierFlagsText /driver $DriverFile did not take (exit $($run.ExitCode))"
    }
    Set-Content -LiteralPath $marker -Value $boot
    $reboot.Add("Driver Verifier now verifies $DriverFile with flags $VerifierFlagsText (standard + I/O verification, IRQL checking, pool tracking$(if (-not $NoLowResources) { ', low resources simulation' }))")
}
if ($reboot.Count -gt 0) { Stop-ForReboot $reboot.ToArray() }

# --- 3. build the driver package
if ($SkipBuild) {
    Add-Result 'build' 'SKIPPED' "-SkipBuild: using $PackageDirectory"
}
else {
    $run = Invoke-Tool cargo @('make', '--version') -Quiet
    if ($run.ExitCode -ne 0) { Stop-Test 'build' 'cargo-make is missing: cargo install --locked cargo-make' }
    Push-Location -LiteralPath $Sample
    try {
        $makeArgs = @('make')
        if ($BuildProfile -eq 'release') { $makeArgs += @('default', '--release') }
        $run = Invoke-Tool cargo $makeArgs
    }
    finally {
        Pop-Location
    }
    $run.Output | Set-Content -LiteralPath (Join-Path $LogDirectory 'cargo-make.log') -Encoding UTF8
    if ($run.ExitCode -ne 0) {
        Stop-Test 'build' "cargo make failed (exit $($run.ExitCode)); it needs the WDK or an eWDK prompt, LLVM (LIBCLANG_PATH), and Developer Mode or an elevated prompt (it links a makefile into target\); log: $(Join-Path $LogDirectory 'cargo-make.log')"
    }
    Add-Result 'build' 'PASS' "cargo make ($BuildProfile)"
}
$Inf = Join-Path $PackageDirectory "$DriverName.inf"
foreach ($file in @($Inf, (Join-Path $PackageDirectory $DriverFile), (Join-Path $PackageDirectory "$DriverName.cat"))) {
    if (-not (Test-Path -LiteralPath $file)) { Stop-Test 'package' "$file is missing" }
}
$certificate = Join-Path $PackageDirectory 'WDRLocalTestCert.cer'
if (Test-Path -LiteralPath $certificate) {
    # The package is signed with wdk-build's test certificate: trust it on
    # this machine, or devcon would ask whether to install.
    Import-Certificate -FilePath $certificate -CertStoreLocation Cert:\LocalMachine\Root | Out-Null
    Import-Certificate -FilePath $certificate -CertStoreLocation Cert:\LocalMachine\TrustedPublisher | Out-Null
    Add-Result 'package' 'PASS' "$PackageDirectory; test certificate trusted"
}
else {
    Add-Result 'package' 'PASS' "$PackageDirectory; no WDRLocalTestCert.cer (signed otherwise?)"
}

# --- 4. install
if ((Get-DriverState) -eq 'Running') {
    Write-Host 'vm-test: removing a device left by an earlier run'
    Invoke-Tool $DevconExe @('remove', $HardwareId) | Out-Null
}
$run = Invoke-Tool $DevconExe @('install', $Inf, $HardwareId)
if ($run.ExitCode -eq 1) { Stop-ForReboot @('devcon install asked for a reboot to finish installing') }
if ($run.ExitCode -ne 0) { Stop-Test 'install' "devcon install failed (exit $($run.ExitCode))" }
$state = Get-DriverState
if ($state -ne 'Running') {
    $status = Invoke-Tool $DevconExe @('status', $HardwareId)
    Stop-Test 'install' "the driver is $state after devcon install: $($status.Output -join ' ')"
}
$query = Invoke-Tool $Verifier @('/query') -Quiet
if (-not (($query.Output -join "`n") -match [regex]::Escape($DriverFile))) {
    Stop-Test 'install' "verifier /query does not list $DriverFile: Driver Verifier is not verifying it (was the machine rebooted after configuring it?)"
}
Add-Result 'install' 'PASS' "devcon install $HardwareId; running, verified"

# --- 5. the probe
$probeArgs = @('build', '--release', '--manifest-path', (Join-Path $ProbeDir 'Cargo.toml'))
if (Test-Path -LiteralPath (Join-Path $ProbeDir 'Cargo.lock')) { $probeArgs += '--locked' }
Push-Location -LiteralPath $RepoRoot
try {
    $run = Invoke-Tool cargo $probeArgs
}
finally {
    Pop-Location
}
$ProbeExe = Join-Path $ProbeDir 'target\release\wsk-probe.exe'
if ($run.ExitCode -ne 0 -or -not (Test-Path -LiteralPath $ProbeExe)) {
    Stop-Test 'probe build' "cargo build of examples\probe failed (exit $($run.ExitCode))"
}
Add-Result 'probe build' 'PASS' $ProbeExe
$common = @('--mode', 'all', '--concurrency', "$Concurrency", '--timeout-ms', "$TimeoutMs")
Invoke-Probe 'probe: every mode' $common (Join-Path $LogDirectory 'probe-all.log')
Invoke-Probe "probe: cancel after $CancelAfterMs ms" ($common + @('--cancel-after-ms', "$CancelAfterMs")) (Join-Path $LogDirectory 'probe-cancel.log')

# --- 6. remove
$run = Invoke-Tool $DevconExe @('remove', $HardwareId)
if ($run.ExitCode -ne 0) {
    Stop-Test 'remove' "devcon remove failed or needs a reboot (exit $($run.ExitCode)): something still holds the device"
}
$deadline = (Get-Date).AddSeconds(60)
while ((Get-DriverState) -eq 'Running' -and (Get-Date) -lt $deadline) { Start-Sleep -Milliseconds 500 }
$state = Get-DriverState
if ($state -eq 'Running') {
    Stop-Test 'remove' 'the driver is still loaded 60 s after devcon remove: a reference to its device object (and so its image) was not let go of'
}
Add-Result 'remove' 'PASS' "devcon remove $HardwareId; driver $state"

# --- 7. what Driver Verifier counted
$query = Invoke-Tool $Verifier @('/query')
$queryLog = Join-Path $LogDirectory 'verifier-query.txt'
$query.Output | Set-Content -LiteralPath $queryLog -Encoding UTF8
$lines = @($query.Output)
$start = -1
for ($i = 0; $i -lt $lines.Count; $i++) {
    if ($lines[$i] -match ('Name:\s*' + [regex]::Escape($DriverFile) + '\s*,\s*loads:\s*(\d+)\s*,\s*unloads:\s*(\d+)')) {
        $start = $i
        $loads = [int]$Matches[1]
        $unloads = [int]$Matches[2]
        break
    }
}
if ($start -lt 0) { Stop-Test 'verifier' "verifier /query does not list $DriverFile (log: $queryLog)" }
$counters = @{}
for ($i = $start + 1; $i -lt $lines.Count; $i++) {
    # The driver's counters follow its Name line, up to the next driver or
    # other text.
    $line = $lines[$i]
    if ($line -match '^\s*Name:') { break }
    if ($line -match '^\s*(\w+)\s*:\s*(\d+)\s*$') {
        $counters[$Matches[1]] = [int64]$Matches[2]
        continue
    }
    if ($counters.Count -gt 0 -and $line -match '\S') { break }
}
$problems = New-Object System.Collections.Generic.List[string]
if ($loads -lt 1 -or $loads -ne $unloads) { $problems.Add("loads $loads, unloads $unloads") }
foreach ($name in @('CurrentPagedPoolAllocations', 'CurrentNonPagedPoolAllocations', 'PagedPoolUsageInBytes', 'NonPagedPoolUsageInBytes')) {
    if (-not $counters.ContainsKey($name)) { $problems.Add("no $name counter") }
    elseif ($counters[$name] -ne 0) { $problems.Add("$name = $($counters[$name]) after unload (a leak)") }
}
foreach ($line in $lines) {
    if ($line -match '^\s*AllocationsWithNoTag\s*:\s*(\d+)' -and [int64]$Matches[1] -ne 0) { $problems.Add("AllocationsWithNoTag = $($Matches[1])") }
    if ($line -match 'violation') { $problems.Add("reported: $($line.Trim())") }
}
if ($problems.Count -gt 0) { Stop-Test 'verifier' (($problems -join '; ') + " (log: $queryLog)") }
$injectedCount = 'n/a'
foreach ($line in $lines) {
    if ($line -match '^\s*AllocationsFailedDeliberately\s*:\s*(\d+)') { $injectedCount = $Matches[1] }
}
Add-Result 'verifier' 'PASS' "loads $loads, unloads $unloads; no pool left; no violation; allocations failed on purpose: $injectedCount; log: $queryLog"

# --- tidy the driver store
if (-not $KeepDriverPackage) {
    $enum = Invoke-Tool 'pnputil.exe' @('/enum-drivers') -Quiet
    $published = $null
    $removed = @()
    foreach ($line in $enum.Output) {
        if ($line -match '^\s*Published Name\s*:\s*(oem\d+\.inf)\s*$') { $published = $Matches[1] }
        elseif ($line -match ('^\s*Original Name\s*:\s*' + [regex]::Escape("$DriverName.inf") + '\s*$') -and $published) {
            $delete = Invoke-Tool 'pnputil.exe' @('/delete-driver', $published)
            if ($delete.ExitCode -eq 0) { $removed += $published }
            $published = $null
        }
    }
    if ($removed.Count -gt 0) { Add-Result 'driver store' 'PASS' ("deleted " + ($removed -join ', ')) }
    else { Add-Result 'driver store' 'NOTE' 'no package of ours found to delete (pnputil output in another language?)' }
}

Write-Summary
Write-Host 'vm-test: PASS. Driver Verifier stays on for this driver; to turn it off: verifier /reset, then reboot.' -ForegroundColor Green
exit 0
