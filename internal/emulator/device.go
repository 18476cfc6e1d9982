package emulator

import "github.com/certprov/certprov-adapter/internal/process"

// algorithmFor is the only signature algorithm a device accepts for its key type.
func algorithmFor(keyType string) string {
	if keyType == KeyECDSA {
		return process.AlgorithmECDSASHA256
	}
	return process.AlgorithmRSAPKCS1SHA256
}
