// Interop oracle for image-rs/tests/sigstore_interop.rs: cosign key files and signatures
// handled by the Go code that cosign and containers/image use (go-tuf's `encrypted` package,
// crypto/x509 PKCS#8 and PKIX, crypto/ecdsa ASN.1 signatures over SHA-256, encoding/json).
//
// Built by the test in GOPATH mode against Debian's golang-* -dev packages.
//
//	keygen KEY PUB PASSPHRASE PEMTYPE     write an encrypted P-256 private key and its public key
//	sign KEY PASSPHRASE DIGEST REFERENCE  print {"payload":b64,"signature":b64} for a cosign payload
//	verify PUB PAYLOADFILE SIGB64 DIGEST REFERENCE
//	                                      exit 0 when the signature verifies and the payload,
//	                                      parsed strictly, signs DIGEST for REFERENCE
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/theupdateframework/go-tuf/encrypted"
)

const payloadType = "cosign container image signature"

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func keygen(keyPath, pubPath, passphrase, pemType string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fail("generate: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		fail("pkcs8: %v", err)
	}
	sealed, err := encrypted.Encrypt(der, []byte(passphrase))
	if err != nil {
		fail("encrypt: %v", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: sealed}), 0o600); err != nil {
		fail("write key: %v", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		fail("pkix: %v", err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644); err != nil {
		fail("write pub: %v", err)
	}
}

func sign(keyPath, passphrase, digest, reference string) {
	data, err := os.ReadFile(keyPath)
	if err != nil {
		fail("read key: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		fail("invalid pem block")
	}
	if block.Type != "ENCRYPTED COSIGN PRIVATE KEY" && block.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		fail("unsupported pem type: %s", block.Type)
	}
	der, err := encrypted.Decrypt(block.Bytes, []byte(passphrase))
	if err != nil {
		fail("decrypt: %v", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		fail("parse pkcs8: %v", err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		fail("not an ECDSA key: %T", parsed)
	}
	// The payload as containers/image marshals it (maps: keys sorted).
	payload, err := json.Marshal(map[string]interface{}{
		"critical": map[string]interface{}{
			"type":     payloadType,
			"image":    map[string]string{"docker-manifest-digest": digest},
			"identity": map[string]string{"docker-reference": reference},
		},
		"optional": map[string]interface{}{
			"creator":   "go interop helper",
			"timestamp": time.Now().Unix(),
		},
	})
	if err != nil {
		fail("marshal: %v", err)
	}
	hash := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, hash[:])
	if err != nil {
		fail("sign: %v", err)
	}
	out, _ := json.Marshal(map[string]string{
		"payload":   base64.StdEncoding.EncodeToString(payload),
		"signature": base64.StdEncoding.EncodeToString(sig),
	})
	fmt.Println(string(out))
}

type strictPayload struct {
	Critical struct {
		Type  string `json:"type"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
	} `json:"critical"`
	Optional map[string]interface{} `json:"optional"`
}

func verify(pubPath, payloadPath, sigB64, digest, reference string) {
	data, err := os.ReadFile(pubPath)
	if err != nil {
		fail("read pub: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		fail("no PUBLIC KEY pem block")
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		fail("parse pkix: %v", err)
	}
	pub, ok := parsed.(*ecdsa.PublicKey)
	if !ok {
		fail("not an ECDSA key: %T", parsed)
	}
	payload, err := os.ReadFile(payloadPath)
	if err != nil {
		fail("read payload: %v", err)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		fail("base64 signature: %v", err)
	}
	hash := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(pub, hash[:], sig) {
		fail("cryptographic signature verification failed")
	}
	var p strictPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		fail("payload: %v", err)
	}
	if p.Critical.Type != payloadType {
		fail("payload type %q", p.Critical.Type)
	}
	if p.Critical.Image.DockerManifestDigest != digest {
		fail("payload digest %s, expected %s", p.Critical.Image.DockerManifestDigest, digest)
	}
	if p.Critical.Identity.DockerReference != reference {
		fail("payload reference %s, expected %s", p.Critical.Identity.DockerReference, reference)
	}
}

func main() {
	a := os.Args[1:]
	switch {
	case len(a) == 5 && a[0] == "keygen":
		keygen(a[1], a[2], a[3], a[4])
	case len(a) == 5 && a[0] == "sign":
		sign(a[1], a[2], a[3], a[4])
	case len(a) == 6 && a[0] == "verify":
		verify(a[1], a[2], a[3], a[4], a[5])
	default:
		fail("usage: keygen KEY PUB PASSPHRASE PEMTYPE | sign KEY PASSPHRASE DIGEST REFERENCE | verify PUB PAYLOAD SIGB64 DIGEST REFERENCE")
	}
}
