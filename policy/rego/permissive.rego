package agent_policy

# PERMISSIVE: every agent request is allowed, exec and stdin included. For debugging a pod only:
# the host can then run anything in the guest and read anything it prints. The policy travels in
# initdata like any other, so its digest is in the evidence (HOST_DATA / MRCONFIGID) and a key
# broker can refuse to release secrets to a pod launched with it.

default CreateContainerRequest := true

default StartContainerRequest := true

default ExecProcessRequest := true

default SignalProcessRequest := true

default WaitProcessRequest := true

default ReadStreamRequest := true

default WriteStreamRequest := true

default CloseStdinRequest := true

default TtyWinResizeRequest := true

default ListProcessesRequest := true

default StatsContainerRequest := true

default RemoveContainerRequest := true

default GetOOMEventRequest := true

default PullImageRequest := true

default DiagnosticReportRequest := true
