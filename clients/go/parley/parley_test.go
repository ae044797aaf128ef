package parley

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorInfo(t *testing.T) {
	st, err := status.New(codes.NotFound, "agent not found").WithDetails(&errdetails.ErrorInfo{
		Reason:   "RESOURCE_NOT_FOUND",
		Domain:   ErrorDomain,
		Metadata: map[string]string{"resource": "agents/x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	info := ErrorInfo(st.Err())
	if info == nil || info.GetReason() != "RESOURCE_NOT_FOUND" || info.GetMetadata()["resource"] != "agents/x" {
		t.Fatalf("ErrorInfo = %v", info)
	}
	if ErrorInfo(status.Error(codes.Internal, "no details")) != nil {
		t.Fatal("expected nil for a status without ErrorInfo")
	}
	if ErrorInfo(errors.New("not a status")) != nil {
		t.Fatal("expected nil for a plain error")
	}
}

func TestBearerMetadata(t *testing.T) {
	md, err := BearerCredentials("abc").GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer abc" {
		t.Fatalf("metadata = %v, %v", md, err)
	}
	if !BearerCredentials("abc").RequireTransportSecurity() {
		t.Fatal("BearerCredentials must require transport security")
	}
}
