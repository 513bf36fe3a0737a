// Package cropapi is a client of the Image Cropping API ("/ai/image/cropping").
//
// It signs requests with the vendor's "v2" scheme, validates input before any
// network call (a paid call must never be spent on input the API refuses),
// decodes both layers of the response envelope, and turns every failure into
// one of a few error types that callers classify with errors.As or with
// ClassOf:
//
//   - *ValidationError: the request was refused locally; nothing was sent.
//   - *TransportError:  no usable answer (network, non-2xx HTTP, non-JSON body);
//     HTTP 429 is a rate limit.
//   - *GatewayError:    the API gateway refused the call (signature, app key,
//     call limits): top-level "code" other than "0".
//   - *APIError:        the business layer answered success=false or a resCode
//     other than 200.
//
// The same client talks to the real API and to the local emulator (package
// emulator); only Config.BaseURL and the credentials differ.
package cropapi
