package vagoogle

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// vaServiceKey is the key the emulator's Verified Access service decrypts key info with. A
// ChromeOS device encrypts the KeyInfo of its answer (with the SPKAC) to Google's public key;
// simulated devices, and any client that fetches the public half from ServiceKeyPath, encrypt
// to this one. Generated on first use: RSA-2048 takes a moment, and most emulators never serve
// Verified Access.
type vaServiceKey struct {
	once sync.Once
	key  *rsa.PrivateKey
	spki []byte
	id   []byte // wrapping_key_id: the first 16 bytes of the SPKI's SHA-256, hex
	err  error
}

func (k *vaServiceKey) load() (*vaServiceKey, error) {
	k.once.Do(func() {
		if k.key, k.err = rsa.GenerateKey(rand.Reader, 2048); k.err != nil {
			k.err = fmt.Errorf("verified access service key: %w", k.err)
			return
		}
		if k.spki, k.err = x509.MarshalPKIXPublicKey(&k.key.PublicKey); k.err != nil {
			k.err = fmt.Errorf("verified access service key: %w", k.err)
			return
		}
		sum := sha256.Sum256(k.spki)
		k.id = []byte(hex.EncodeToString(sum[:16]))
	})
	return k, k.err
}

// encryptKeyInfo encrypts a serialized KeyInfo to the service key in the shape of ChromeOS's
// EncryptedData: a fresh AES-256 key, AES-256-CBC with PKCS#7 padding under a random IV,
// HMAC-SHA512 over iv || ciphertext, and the AES key wrapped with RSA-OAEP (SHA-1, as OpenSSL's
// RSA_PKCS1_OAEP_PADDING) to the service's public key. The same scheme runs in the sample
// extension's test stand-in (WebCrypto), which is why it keeps to what WebCrypto offers.
func encryptKeyInfo(pub *rsa.PublicKey, keyID, plaintext []byte) (encryptedData, error) {
	aesKey, iv := make([]byte, 32), make([]byte, aes.BlockSize)
	if _, err := rand.Read(aesKey); err != nil {
		return encryptedData{}, fmt.Errorf("encrypt key info: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return encryptedData{}, fmt.Errorf("encrypt key info: %w", err)
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return encryptedData{}, fmt.Errorf("encrypt key info: %w", err)
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	ct := append(append([]byte(nil), plaintext...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, aesKey, nil)
	if err != nil {
		return encryptedData{}, fmt.Errorf("encrypt key info: wrap key: %w", err)
	}
	return encryptedData{wrappedKey: wrapped, iv: iv, mac: keyInfoMAC(aesKey, iv, ct), data: ct, wrappingKeyID: keyID}, nil
}

// decryptKeyInfo reverses encryptKeyInfo, checking the wrapping key id and the MAC first.
func (k *vaServiceKey) decryptKeyInfo(ed encryptedData) ([]byte, error) {
	if !bytes.Equal(ed.wrappingKeyID, k.id) {
		return nil, errors.New("key info encrypted to another key")
	}
	aesKey, err := rsa.DecryptOAEP(sha1.New(), nil, k.key, ed.wrappedKey, nil)
	if err != nil || len(aesKey) != 32 {
		return nil, errors.New("key info: the wrapped key does not unwrap")
	}
	if len(ed.iv) != aes.BlockSize || len(ed.data) == 0 || len(ed.data)%aes.BlockSize != 0 {
		return nil, errors.New("key info: malformed ciphertext")
	}
	if !hmac.Equal(ed.mac, keyInfoMAC(aesKey, ed.iv, ed.data)) {
		return nil, errors.New("key info: MAC does not verify")
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return nil, fmt.Errorf("key info: %w", err)
	}
	pt := make([]byte, len(ed.data))
	cipher.NewCBCDecrypter(block, ed.iv).CryptBlocks(pt, ed.data)
	pad := int(pt[len(pt)-1])
	if pad == 0 || pad > aes.BlockSize || !bytes.Equal(pt[len(pt)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, errors.New("key info: bad padding")
	}
	return pt[:len(pt)-pad], nil
}

func keyInfoMAC(key, iv, ct []byte) []byte {
	m := hmac.New(sha512.New, key)
	m.Write(iv)
	m.Write(ct)
	return m.Sum(nil)
}
