"The shared test kit itself (tests/conftest.py): the network guard refuses, the randomiser moves every tensor."
import socket, urllib.request

import pytest, torch, torchvision
from conftest import randomise


def test_the_network_is_refused_and_loopback_is_not():
    for reach in (lambda: urllib.request.urlopen('https://download.pytorch.org/models/resnet18-f37072fd.pth'),
                  lambda: socket.create_connection(('93.184.216.34', 443), timeout=1),
                  lambda: socket.getaddrinfo('download.pytorch.org', 443),
                  lambda: socket.socket().connect(('8.8.8.8', 53))):
        with pytest.raises(AssertionError, match='network access attempted'): reach()
    with socket.socket() as server, socket.socket() as client:   # this machine stays reachable (DDP's gloo store)
        server.bind(('127.0.0.1', 0))
        server.listen(1)
        client.connect(server.getsockname())
    assert socket.getaddrinfo('localhost', 80)


def test_randomise_moves_every_tensor_and_repeats():
    fresh = torchvision.models.resnet18()
    a, b, c = (randomise(torchvision.models.resnet18(), seed) for seed in (0, 0, 1))
    sd0, sda, sdb, sdc = fresh.state_dict(), a.state_dict(), b.state_dict(), c.state_dict()
    moved = [k for k in sd0 if sd0[k].is_floating_point() and not torch.equal(sd0[k], sda[k])]
    assert len(moved) == sum(v.is_floating_point() for v in sd0.values())            # no float tensor left at init
    assert all(torch.equal(sda[k], sdb[k]) for k in sda) and not torch.equal(sda['fc.weight'], sdc['fc.weight'])
    w = sda['layer3.0.conv1.weight']                                                   # uniform, variance 1/fan_in
    assert abs(w.var().item() * w[0].numel() - 1) < 0.05 and not a.training
    assert sda['bn1.running_var'].min() >= 0.5 and sda['bn1.weight'].min() >= 0.5
