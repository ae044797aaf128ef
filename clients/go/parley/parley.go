// Package parley holds the small pieces every Go program talking to Parley needs on top of the
// generated package parleyv1: a connection, bearer-token credentials, and the
// google.rpc.ErrorInfo of a failed call.
//
//	conn, err := parley.Dial("localhost:50051")
//	auth := parleyv1.NewAuthServiceClient(conn)
//	tokens, err := auth.CreateToken(ctx, &parleyv1.CreateTokenRequest{Username: u, Password: p})
//	agents := parleyv1.NewAgentServiceClient(conn)
//	agent, err := agents.CreateAgent(ctx, req, parley.Bearer(tokens.GetAccessToken()))
package parley

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of every error Parley itself reports.
const ErrorDomain = "parley.dev"

// Dial opens a client connection to a Parley server at target ("host:port"). Without options it
// uses plaintext (a local server, or one behind a TLS-terminating proxy); pass
// grpc.WithTransportCredentials(credentials.NewTLS(...)) for TLS.
func Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return grpc.NewClient(target, opts...)
}

// bearerToken sends "authorization: Bearer <token>" with every call.
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.secure }

// Bearer is a call option that authenticates one call with an access token (from
// AuthService.CreateToken or RefreshToken). It is allowed over plaintext connections, like the
// rest of this package's defaults; use BearerCredentials with grpc.WithPerRPCCredentials to
// authenticate every call of a connection and require TLS.
func Bearer(accessToken string) grpc.CallOption {
	return grpc.PerRPCCredentials(bearerToken{token: accessToken})
}

// BearerCredentials authenticates every call of a connection with an access token and refuses
// to send it over a connection without transport security.
func BearerCredentials(accessToken string) credentials.PerRPCCredentials {
	return bearerToken{token: accessToken, secure: true}
}

// ErrorInfo returns the google.rpc.ErrorInfo detail of a failed call's error (its Reason is an
// UPPER_SNAKE code such as RESOURCE_NOT_FOUND or TOKEN_EXPIRED), or nil if it has none.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}
