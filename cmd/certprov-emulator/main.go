// Command certprov-emulator runs the local Google side of the Certificate Provisioning API (REST
// plus Pub/Sub) and of the Verified Access API, and drives them for demos and load tests.
//
//	certprov-emulator serve      serve the REST API, the control API and a pstest Pub/Sub server
//	certprov-emulator provision  start processes on a running emulator and check what the adapter did
//	certprov-emulator va-enroll  play the Chrome extension once against the adapter's enrollment API
//	certprov-emulator load       the load harness: emulator, adapter and reference driver, measured
//	certprov-emulator reference  the minimal reference adapter the load harness compares with
//	certprov-emulator version    print the build version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // provision: some process was not issued and verified; va-enroll: refused or unverified; serve: runtime error
	exitUsage = 2 // bad command line or setup error
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "provision":
		return runProvision(ctx, args[1:], stdout, stderr)
	case "va-enroll":
		return runVAEnroll(ctx, args[1:], stdout, stderr)
	case "load":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "reference":
		return runReference(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "certprov-emulator", buildinfo.Get())
		return exitOK
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "certprov-emulator: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: certprov-emulator <command> [flags]

commands:
  serve      serve the Certificate Provisioning REST API, the control API and Pub/Sub (pstest)
  provision  start processes through the control API, wait, verify the issued certificates
  va-enroll  Verified Access enrollment against the adapter, with the emulator as device and Google
  load       the load harness: scenarios against the adapter and the reference driver (docs/performance.md)
  reference  the minimal reference adapter the load harness measures the adapter against
  version    print the version

Run "certprov-emulator <command> -h" for the flags of a command.
`)
}
